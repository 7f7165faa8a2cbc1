/* connection.c: Pipe() and its Connection ends over shared memory.
 *
 * One type, fastmp._core.Connection, that fastmp/connection.py subclasses
 * (together with the stdlib's multiprocessing.connection.Connection).
 *
 * A pipe is one anonymous shared file (memfd) holding a small header and
 * one byte stream per direction (csrc/core/stream.h): channel k is read by
 * end k and written by the other end; a one-way pipe (duplex=False) has
 * channel 0 only, end 0 reading and end 1 writing.  A message is an 8-byte
 * length and the payload: small ones go in with one copy and one publish,
 * large ones stream through the buffer while the reader copies them out.
 * send() pickles as the stdlib does (pickle.dumps for plain builtin data,
 * where it gives the same bytes faster; the ForkingPickler otherwise), so
 * recv_bytes() of a send() is the stdlib's pickle.
 *
 * Lifetimes are the kernel's, as with the stdlib's descriptors.  Each end
 * also holds one end of a socketpair that carries no messages: the reader
 * learns that every copy of the other end is gone (closed, collected, its
 * process killed) when its socket reads EOF.  It looks only when the stream
 * is empty and it is about to sleep, and again after each wait slice, so
 * the fast path makes no system call; a close wakes the other side's
 * sleepers, so EOF after a close is immediate.  A writer looks when the
 * other side's close count has moved since it last looked (one poll per
 * close, not per send) and while it waits for room: send to a closed peer
 * raises BrokenPipeError; to a killed one, once the buffer is full.
 * Nothing is named, so nothing is left in /dev/shm: the memfd and the
 * socket pass to children by inheritance (fork) or as descriptors (the
 * stdlib's reduction.DupFd, for spawn, forkserver and transfers).
 *
 * fileno() is that socket, as the stdlib's duplex Pipe gives its socket:
 * multiprocessing.reduction.send_handle/recv_handle and raw writes work on
 * it, and it reads ready when recv() would not block, for wait() and
 * select: at EOF, and when the stream holds bytes, by one token byte in it.
 * The writer that makes the stream go from empty to not empty sends the
 * token (a shared flag says whether one is there: no system call while it
 * is); the token is taken out again when the stream is found empty, by
 * fileno() and, once some process has asked fileno() of the end, by the
 * read that empties it.  So a pipe that nobody waits on costs one system
 * call for its first message and none after, and a message sent before
 * anyone asked fileno() still makes it read ready.  (The token protocol:
 * see signal_reader and clear_token.) */
#include "fastmp.h"
#include "core/stream.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <structmember.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define PIPE_MAGIC 0x45504950u          /* "PIPE" */
#define PIPE_HEADER_BYTES 4096u
#define PIPE_MAX_MESSAGE ((uint64_t)1 << 40)
#define PIPE_DEFAULT_CAPACITY ((size_t)128 * 1024)
#define PIPE_MAX_CAPACITY ((size_t)1 << 30)

typedef struct {
    uint32_t magic;
    uint32_t nchan;                     /* 1 (one-way) or 2 */
    uint64_t capacity;                  /* data bytes per channel */
    _Atomic uint32_t closes[2];         /* closes of each end's copies, ever */
    _Atomic uint32_t signaled[2];       /* per channel: a token is in its reader's socket */
    _Atomic uint32_t watched[2];        /* per channel: fileno() was asked of its reader */
} fm_pipe_shared;
_Static_assert(sizeof(fm_pipe_shared) <= PIPE_HEADER_BYTES, "pipe header outgrows its page");

typedef struct {
    PyObject_HEAD
    unsigned char *base;                /* the mapping (NULL: unmapped) */
    size_t size;
    fm_pipe_shared *sh;
    fm_stream *rx, *tx;                 /* NULL where the end does not read / write */
    int memfd, livefd;                  /* -1 once closed */
    int rxch, txch;                     /* the channels this end reads and writes */
    int end;                            /* 0 or 1 */
    int readable, writable;
    int closed;
    int busy;                           /* threads inside with the GIL released */
    uint32_t peer_closes_seen;
    int peer_dead;                      /* seen gone once: gone for good */
    PyObject *dumps, *plain_dumps, *loads;
    PyObject *weakreflist;
} FmConnObject;

static size_t
pipe_bytes(uint32_t nchan, size_t cap)
{
    return PIPE_HEADER_BYTES + nchan * fm_stream_bytes(cap);
}

static fm_stream *
channel(unsigned char *base, size_t cap, int k)
{
    return (fm_stream *)(base + PIPE_HEADER_BYTES + (size_t)k * fm_stream_bytes(cap));
}

static PyObject *
corrupt(void)
{
    PyErr_SetString(PyExc_OSError, "fastmp pipe: the shared buffer is corrupt");
    return NULL;
}

/* ------------------------------------------------------------- liveness */

/* 1 when every copy of the other end is gone (our socket reads EOF). */
static int
peer_gone(FmConnObject *self)
{
    if (self->peer_dead)
        return 1;
    if (self->livefd < 0)
        return 0;
    struct pollfd p = {.fd = self->livefd, .events = POLLIN | POLLRDHUP};
    int r;
    do
        r = poll(&p, 1, 0);
    while (r < 0 && errno == EINTR);
    /* not POLLIN: the socket also carries tokens (and whatever a program
     * writes to fileno()) */
    self->peer_dead = r > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0;
    return self->peer_dead;
}

static int
check_usable(FmConnObject *self, int reading)
{
    if (self->closed) {
        PyErr_SetString(PyExc_OSError, "handle is closed");
        return -1;
    }
    if (reading && !self->readable) {
        PyErr_SetString(PyExc_OSError, "connection is write-only");
        return -1;
    }
    if (!reading && !self->writable) {
        PyErr_SetString(PyExc_OSError, "connection is read-only");
        return -1;
    }
    return 0;
}

/* Take one of the stream's mutexes (a dead holder's is taken over). */
static int
take_mutex(FmConnObject *self, fm_mutex *m)
{
    uint32_t me = fm_self_pid();
    int st = fm_mutex_trylock(m, me);
    if (st == FM_OK)
        return 0;
    self->busy++;
    FM_BLOCKING(st, fm_mutex_lock(m, me, FM_FOREVER, fm_spin));
    self->busy--;
    if (st == FM_OK || st == FM_RECOVERED) {
        if (!self->closed)
            return 0;
        fm_mutex_unlock(m);
        PyErr_SetString(PyExc_OSError, "handle is closed");
        return -1;
    }
    fm_set_error(st);
    return -1;
}

/* --------------------------------------------------------------- waits */

enum { WAIT_READY = 0, WAIT_TIMEOUT = 1, WAIT_PEER_GONE = 2 };

/* Wait until the stream has bytes (reading) or room (writing); spins first,
 * then looks at the other end before each sleep.  WAIT_READY,
 * WAIT_TIMEOUT, WAIT_PEER_GONE (nothing there and the other end gone), or
 * -1 with an exception (a signal handler's, a close by another thread). */
static int
wait_stream(FmConnObject *self, fm_stream *s, int reading, int64_t deadline)
{
    int64_t spin = atomic_load_explicit(&fm_spin_ns, memory_order_relaxed);
    for (;;) {
        /* a first round that only spins (if this thread spins now) */
        int64_t until = spin > 0 ? fm_spin_end(spin, deadline) : 0;
        if (until == 0) {
            until = deadline;
            spin = 0;
        }
        int st;
        self->busy++;
        Py_BEGIN_ALLOW_THREADS
        st = reading ? fm_stream_wait_avail(s, until, spin)
                     : fm_stream_wait_room(s, until, spin);
        Py_END_ALLOW_THREADS
        self->busy--;
        if (st == FM_OK)
            return WAIT_READY;
        if (st == FM_CORRUPT) {
            corrupt();
            return -1;
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
        if (self->closed) {
            PyErr_SetString(PyExc_OSError, "handle is closed");
            return -1;
        }
        if (peer_gone(self)) {
            uint64_t n = reading ? fm_stream_avail(s) : 0;
            if (n == (uint64_t)-1) {
                corrupt();
                return -1;
            }
            return n > 0 ? WAIT_READY : WAIT_PEER_GONE;
        }
        if (deadline != FM_FOREVER && fm_now_ns() >= deadline)
            return WAIT_TIMEOUT;
        spin = 0;
    }
}

/* ------------------------------------------------------------- writing */

static int
broken_pipe(void)
{
    errno = EPIPE;
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* After a publish: if no token is in the reader's socket, put one there.
 * One load when there is.  Against clear_token: the head is stored
 * (seq_cst) before the flag is read, and the reader clears the flag before
 * it reads the head, so either this writer sees the flag cleared and sends
 * a token, or the reader sees these bytes and leaves its token in place. */
static inline void
signal_reader(FmConnObject *self)
{
    _Atomic uint32_t *sig = &self->sh->signaled[self->txch];
    if (atomic_load_explicit(sig, memory_order_seq_cst) != 0)
        return;
    uint32_t zero = 0;
    if (!atomic_compare_exchange_strong_explicit(sig, &zero, 1, memory_order_seq_cst,
                                                 memory_order_seq_cst))
        return;
    static const char token = 0;
    ssize_t r;
    do
        r = send(self->livefd, &token, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    /* EPIPE: nobody reads any more; EAGAIN: the socket reads ready anyway */
}

/* Send one message: its 8-byte length, then its bytes. */
static int
write_message(FmConnObject *self, const char *p, size_t n)
{
    fm_stream *s = self->tx;
    uint32_t closes = atomic_load_explicit(&self->sh->closes[1 - self->end], memory_order_acquire);
    if (closes != self->peer_closes_seen || self->peer_dead) {
        self->peer_closes_seen = closes;
        if (peer_gone(self))
            return broken_pipe();
    }
    uint64_t hdr = (uint64_t)n;
    if (take_mutex(self, &s->wlock) < 0)
        return -1;
    if (fm_stream_put2(s, &hdr, sizeof hdr, p, n)) {
        fm_mutex_unlock(&s->wlock);
        signal_reader(self);
        return 0;
    }
    size_t total = sizeof hdr + n, done = 0;
    while (done < total) {
        size_t put;
        if (done < sizeof hdr)
            put = fm_stream_put(s, (const char *)&hdr + done, sizeof hdr - done);
        else
            put = fm_stream_put(s, p + (done - sizeof hdr), total - done);
        if (put > 0) {
            done += put;
            signal_reader(self);
            continue;
        }
        int w = wait_stream(self, s, 0, FM_FOREVER);
        if (w == WAIT_READY)
            continue;
        fm_mutex_unlock(&s->wlock);
        if (w == WAIT_PEER_GONE)
            return broken_pipe();
        return -1;
    }
    fm_mutex_unlock(&s->wlock);
    return 0;
}

/* ------------------------------------------------------------- reading */

/* Take one token out of the socket.  Its writer may be between setting
 * the flag and sending it (a few instructions): wait for it a little. */
static void
take_token(FmConnObject *self)
{
    char b;
    for (int tries = 0; tries < 2; tries++) {
        ssize_t r;
        do
            r = recv(self->livefd, &b, 1, MSG_DONTWAIT);
        while (r < 0 && errno == EINTR);
        if (r >= 0 || errno != EAGAIN || tries == 1)
            return;             /* taken, EOF, or (a writer killed in between) none */
        struct pollfd p = {.fd = self->livefd, .events = POLLIN};
        self->busy++;
        Py_BEGIN_ALLOW_THREADS
        do
            r = poll(&p, 1, 1000);
        while (r < 0 && errno == EINTR);
        Py_END_ALLOW_THREADS
        self->busy--;
        if (self->closed)
            return;
    }
}

/* The stream was found empty: take the token out, so that the socket does
 * not read ready for nothing.  The flag is cleared before the head is read
 * again (seq_cst, see signal_reader): bytes published meanwhile keep the
 * token (flag set back), unless their writer saw the flag cleared and sent
 * a second one: then one of the two is taken. */
static void
clear_token(FmConnObject *self)
{
    _Atomic uint32_t *sig = &self->sh->signaled[self->rxch];
    uint32_t one = 1;
    if (atomic_load_explicit(sig, memory_order_seq_cst) == 0 ||
        !atomic_compare_exchange_strong_explicit(sig, &one, 0, memory_order_seq_cst,
                                                 memory_order_seq_cst))
        return;
    if (fm_stream_avail(self->rx) != 0) {
        uint32_t zero = 0;
        if (atomic_compare_exchange_strong_explicit(sig, &zero, 1, memory_order_seq_cst,
                                                    memory_order_seq_cst))
            return;
    }
    take_token(self);
}

/* After a read: once somebody waits on this end's descriptor, the read
 * that empties the stream takes the token out (before, nobody looks). */
static void
rearm(FmConnObject *self)
{
    if (atomic_load_explicit(&self->sh->watched[self->rxch], memory_order_relaxed) == 0)
        return;
    if (fm_stream_avail(self->rx) != 0)
        return;
    clear_token(self);
}

/* Read exactly n bytes into dst (rlock held).  0; -1 with an exception
 * (EOFError when the other end is gone before the first byte of a message,
 * OSError after it). */
static int
read_exact(FmConnObject *self, char *dst, size_t n, int message_start)
{
    size_t done = 0;
    while (done < n) {
        size_t got = fm_stream_get(self->rx, dst + done, n - done);
        if (got > 0) {
            done += got;
            continue;
        }
        int w = wait_stream(self, self->rx, 1, FM_FOREVER);
        if (w == WAIT_READY)
            continue;
        if (w == WAIT_PEER_GONE) {
            if (message_start && done == 0)
                PyErr_SetNone(PyExc_EOFError);
            else
                PyErr_SetString(PyExc_OSError, "got end of file during message");
        }
        return -1;
    }
    return 0;
}

/* Take the rlock and read the next message's length.  0 (lock held), -1. */
static int
read_header(FmConnObject *self, uint64_t *len)
{
    if (take_mutex(self, &self->rx->rlock) < 0)
        return -1;
    uint64_t hdr;
    size_t got = fm_stream_get(self->rx, &hdr, sizeof hdr);
    if (got != sizeof hdr) {
        /* nothing there yet, or a header in pieces: what came out is
         * consumed, carry on from it */
        if (read_exact(self, (char *)&hdr + got, sizeof hdr - got, got == 0) < 0)
            goto error;
    }
    if (hdr > PIPE_MAX_MESSAGE || hdr > (uint64_t)PY_SSIZE_T_MAX) {
        corrupt();
        goto error;
    }
    *len = hdr;
    return 0;
error:
    fm_mutex_unlock(&self->rx->rlock);
    return -1;
}

/* The message's bytes, rlock held; releases it. */
static PyObject *
read_body(FmConnObject *self, uint64_t len)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
    if (b == NULL)
        goto error;
    if (read_exact(self, PyBytes_AS_STRING(b), (size_t)len, 0) < 0) {
        Py_DECREF(b);
        goto error;
    }
    fm_mutex_unlock(&self->rx->rlock);
    rearm(self);
    return b;
error:
    fm_mutex_unlock(&self->rx->rlock);
    return NULL;
}

/* --------------------------------------------------------------- close */

static void
unmap(FmConnObject *self)
{
    if (self->base != NULL && self->busy == 0) {
        munmap(self->base, self->size);
        self->base = NULL;
        self->sh = NULL;
        self->rx = self->tx = NULL;
    }
}

static void
conn_close(FmConnObject *self)
{
    if (self->closed)
        return;
    self->closed = 1;
    if (self->livefd >= 0)
        close(self->livefd);
    if (self->memfd >= 0)
        close(self->memfd);
    self->livefd = self->memfd = -1;
    /* the socket is closed first: a woken peer that looks sees it gone */
    atomic_fetch_add_explicit(&self->sh->closes[self->end], 1, memory_order_seq_cst);
    if (self->rx != NULL)
        fm_stream_wake_all(self->rx);
    if (self->tx != NULL)
        fm_stream_wake_all(self->tx);
    unmap(self);
}

/* ------------------------------------------------------------ making */

static FmConnObject *
conn_alloc(PyTypeObject *tp)
{
    FmConnObject *self = (FmConnObject *)tp->tp_alloc(tp, 0);
    if (self == NULL)
        return NULL;
    self->memfd = self->livefd = -1;
    self->closed = 1;               /* until mapped */
    self->dumps = PyObject_GetAttrString((PyObject *)tp, "_fm_dumps");
    self->plain_dumps = PyObject_GetAttrString((PyObject *)tp, "_fm_plain_dumps");
    self->loads = PyObject_GetAttrString((PyObject *)tp, "_fm_loads");
    if (self->dumps == NULL || self->plain_dumps == NULL || self->loads == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return self;
}

/* Map the pipe's file and point at this end's channels; takes the fds. */
static int
conn_setup(FmConnObject *self, int memfd, int livefd, int end, int readable, int writable)
{
    self->memfd = memfd;
    self->livefd = livefd;
    struct stat stt;
    if (fstat(memfd, &stt) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    size_t size = (size_t)stt.st_size;
    if (size < PIPE_HEADER_BYTES)
        goto bad;
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (m == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->base = m;
    self->size = size;
    self->sh = m;
    uint32_t nchan = self->sh->nchan;
    uint64_t cap = self->sh->capacity;
    if (self->sh->magic != PIPE_MAGIC || (nchan != 1 && nchan != 2) ||
        cap < FM_STREAM_MIN_CAPACITY || cap > PIPE_MAX_CAPACITY || (cap & (cap - 1)) != 0 ||
        pipe_bytes(nchan, (size_t)cap) != size)
        goto bad;
    for (uint32_t k = 0; k < nchan; k++)
        if (fm_stream_check(channel(self->base, cap, (int)k), fm_stream_bytes(cap)) != FM_OK ||
            channel(self->base, cap, (int)k)->capacity != cap)
            goto bad;
    if (end != 0 && end != 1)
        goto bad;
    if (nchan == 1 && ((end == 0 && writable) || (end == 1 && readable)))
        goto bad;
    self->end = end;
    self->readable = readable;
    self->writable = writable;
    self->rxch = nchan == 1 ? 0 : end;
    self->txch = nchan == 1 ? 0 : 1 - end;
    if (readable)
        self->rx = channel(self->base, cap, self->rxch);
    if (writable)
        self->tx = channel(self->base, cap, self->txch);
    self->peer_closes_seen = atomic_load_explicit(&self->sh->closes[1 - end], memory_order_acquire);
    self->closed = 0;
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "fastmp pipe: not a pipe's shared file");
    return -1;
}

PyDoc_STRVAR(Conn_pair_doc,
"_fm_pair($type, duplex=True, capacity=0, /)\n--\n\n"
"A new pipe: its two ends, (reader, writer) when duplex is false.\n"
"capacity: buffer bytes per direction (0: the default).");

static PyObject *
Conn_pair(PyObject *cls, PyObject *const *args, Py_ssize_t nargs)
{
    int duplex = 1;
    Py_ssize_t cap = 0;
    if (nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "_fm_pair() takes at most 2 arguments");
        return NULL;
    }
    if (nargs >= 1 && (duplex = PyObject_IsTrue(args[0])) < 0)
        return NULL;
    if (nargs >= 2) {
        cap = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
        if (cap == -1 && PyErr_Occurred())
            return NULL;
    }
    size_t capacity = cap <= 0 ? PIPE_DEFAULT_CAPACITY : (size_t)cap;
    if (capacity > PIPE_MAX_CAPACITY) {
        PyErr_SetString(PyExc_ValueError, "pipe capacity too large");
        return NULL;
    }
    size_t c = FM_STREAM_MIN_CAPACITY;
    while (c < capacity)
        c <<= 1;
    capacity = c;
    uint32_t nchan = duplex ? 2 : 1;
    size_t size = pipe_bytes(nchan, capacity);
    int memfd = -1, sv[2] = {-1, -1};
    FmConnObject *a = NULL, *b = NULL;
    void *m = MAP_FAILED;

    memfd = memfd_create("fastmp-pipe", MFD_CLOEXEC);
    if (memfd < 0)
        goto oserror;
    if (fm_shm_reserve_fd(memfd, size) != FM_OK)
        goto oserror;
    m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (m == MAP_FAILED)
        goto oserror;
    fm_pipe_shared *sh = m;
    sh->nchan = nchan;
    sh->capacity = capacity;
    for (uint32_t k = 0; k < nchan; k++) {
        if (fm_stream_init(channel(m, capacity, (int)k), capacity) != FM_OK) {
            corrupt();
            goto error;
        }
    }
    atomic_thread_fence(memory_order_release);
    sh->magic = PIPE_MAGIC;
    munmap(m, size);
    m = MAP_FAILED;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        goto oserror;
    int memfd2 = fcntl(memfd, F_DUPFD_CLOEXEC, 0);
    if (memfd2 < 0)
        goto oserror;
    a = conn_alloc((PyTypeObject *)cls);
    if (a == NULL) {
        close(memfd2);
        goto error;
    }
    if (conn_setup(a, memfd, sv[0], 0, 1, duplex) < 0) {
        memfd = sv[0] = -1;         /* a owns them now */
        close(memfd2);
        goto error;
    }
    memfd = sv[0] = -1;
    b = conn_alloc((PyTypeObject *)cls);
    if (b == NULL) {
        close(memfd2);
        goto error;
    }
    int r = conn_setup(b, memfd2, sv[1], 1, duplex, 1);
    sv[1] = -1;
    if (r < 0)
        goto error;
    PyObject *res = PyTuple_Pack(2, (PyObject *)a, (PyObject *)b);
    Py_DECREF(a);
    Py_DECREF(b);
    return res;
oserror:
    PyErr_SetFromErrno(PyExc_OSError);
error:
    if (m != MAP_FAILED)
        munmap(m, size);
    if (memfd >= 0)
        close(memfd);
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    Py_XDECREF(a);
    Py_XDECREF(b);
    return NULL;
}

static int
as_int(PyObject *o)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < INT_MIN || v > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "descriptor out of range");
        return -1;
    }
    return (int)v;
}

PyDoc_STRVAR(Conn_attach_doc,
"_fm_attach($type, memfd, livefd, end, readable, writable, /)\n--\n\n"
"The end of a pipe passed from another process: takes both descriptors.");

static PyObject *
Conn_attach(PyObject *cls, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "_fm_attach() takes 5 arguments");
        return NULL;
    }
    int memfd = as_int(args[0]);
    int livefd = as_int(args[1]);
    int end = as_int(args[2]);
    int readable = PyObject_IsTrue(args[3]);
    int writable = PyObject_IsTrue(args[4]);
    if (PyErr_Occurred() || readable < 0 || writable < 0)
        return NULL;
    if (memfd < 0 || livefd < 0) {
        PyErr_SetString(PyExc_ValueError, "invalid handle");
        return NULL;
    }
    FmConnObject *self = conn_alloc((PyTypeObject *)cls);
    if (self == NULL) {
        close(memfd);
        close(livefd);
        return NULL;
    }
    if (conn_setup(self, memfd, livefd, end, readable, writable) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
Conn_traverse(FmConnObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dumps);
    Py_VISIT(self->plain_dumps);
    Py_VISIT(self->loads);
    return 0;
}

static int
Conn_clear(FmConnObject *self)
{
    Py_CLEAR(self->dumps);
    Py_CLEAR(self->plain_dumps);
    Py_CLEAR(self->loads);
    return 0;
}

static void
Conn_dealloc(FmConnObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (!self->closed)
        conn_close(self);
    else {
        if (self->livefd >= 0)
            close(self->livefd);
        if (self->memfd >= 0)
            close(self->memfd);
    }
    self->busy = 0;
    unmap(self);
    Conn_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------- methods */

/* One optional argument, by position or as keyword `name`: *out stays as
 * it is when absent.  0, or -1 with TypeError. */
static int
one_arg(const char *fname, const char *name, PyObject *const *args, Py_ssize_t nargs,
        PyObject *kwnames, PyObject **out)
{
    const char *const names[1] = {name};
    PyObject *given;
    if (fm_parse_args(fname, args, nargs, kwnames, names, 1, 0, &given) < 0)
        return -1;
    if (given != NULL)
        *out = given;
    return 0;
}

static int
get_index(PyObject *o, Py_ssize_t *out)
{
    *out = PyNumber_AsSsize_t(o, PyExc_OverflowError);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

PyDoc_STRVAR(Conn_send_bytes_doc,
"send_bytes($self, /, buf, offset=0, size=None)\n--\n\n"
"Send the bytes data from a bytes-like object.");

static PyObject *
Conn_send_bytes(FmConnObject *self, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    PyObject *argv[3];
    static const char *const names[3] = {"buf", "offset", "size"};
    if (fm_parse_args("send_bytes", args, nargs, kwnames, names, 3, 1, argv) < 0)
        return NULL;
    if (check_usable(self, 0) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(argv[0], &view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    Py_ssize_t n = view.len, offset = 0, size;
    PyObject *res = NULL;
    if (argv[1] != NULL && get_index(argv[1], &offset) < 0)
        goto done;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "offset is negative");
        goto done;
    }
    if (n < offset) {
        PyErr_SetString(PyExc_ValueError, "buffer length < offset");
        goto done;
    }
    if (argv[2] == NULL || argv[2] == Py_None)
        size = n - offset;
    else {
        if (get_index(argv[2], &size) < 0)
            goto done;
        if (size < 0) {
            PyErr_SetString(PyExc_ValueError, "size is negative");
            goto done;
        }
        if (offset + size > n) {
            PyErr_SetString(PyExc_ValueError, "buffer length < offset + size");
            goto done;
        }
    }
    if (write_message(self, (const char *)view.buf + offset, (size_t)size) == 0)
        res = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&view);
    return res;
}

/* Plain builtin data, which pickle.dumps pickles as the ForkingPickler
 * would (no reducer of its table applies). */
static int
is_plain(PyObject *o, int depth)
{
    if (depth > 8)
        return 0;
    PyTypeObject *t = Py_TYPE(o);
    if (o == Py_None || t == &PyBool_Type || t == &PyLong_Type || t == &PyFloat_Type ||
        t == &PyUnicode_Type || t == &PyBytes_Type)
        return 1;
    if (t == &PyTuple_Type || t == &PyList_Type) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
        if (n > 64)
            return 0;
        for (Py_ssize_t i = 0; i < n; i++)
            if (!is_plain(PySequence_Fast_GET_ITEM(o, i), depth + 1))
                return 0;
        return 1;
    }
    if (t == &PyDict_Type) {
        if (PyDict_GET_SIZE(o) > 64)
            return 0;
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(o, &pos, &k, &v))
            if (!is_plain(k, depth + 1) || !is_plain(v, depth + 1))
                return 0;
        return 1;
    }
    return 0;
}

PyDoc_STRVAR(Conn_send_doc,
"send($self, /, obj)\n--\n\n"
"Send a (picklable) object.");

static PyObject *
Conn_send(FmConnObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *obj = NULL;
    if (one_arg("send", "obj", args, nargs, kwnames, &obj) < 0)
        return NULL;
    if (obj == NULL) {
        PyErr_SetString(PyExc_TypeError, "send() missing required argument 'obj'");
        return NULL;
    }
    if (check_usable(self, 0) < 0)
        return NULL;
    PyObject *fn = is_plain(obj, 0) ? self->plain_dumps : self->dumps;
    PyObject *data = PyObject_CallOneArg(fn, obj);
    if (data == NULL)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_C_CONTIGUOUS) < 0) {
        Py_DECREF(data);
        return NULL;
    }
    int r = check_usable(self, 0) < 0 ? -1 : write_message(self, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    Py_DECREF(data);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
bad_message_length(FmConnObject *self)
{
    if (self->writable)
        self->readable = 0;
    else
        conn_close(self);
    PyErr_SetString(PyExc_OSError, "bad message length");
    return NULL;
}

PyDoc_STRVAR(Conn_recv_bytes_doc,
"recv_bytes($self, /, maxlength=None)\n--\n\n"
"Receive bytes data as a bytes object.");

static PyObject *
Conn_recv_bytes(FmConnObject *self, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    PyObject *maxobj = NULL;
    if (one_arg("recv_bytes", "maxlength", args, nargs, kwnames, &maxobj) < 0)
        return NULL;
    if (check_usable(self, 1) < 0)
        return NULL;
    Py_ssize_t maxlength = -1;
    if (maxobj != NULL && maxobj != Py_None) {
        if (get_index(maxobj, &maxlength) < 0)
            return NULL;
        if (maxlength < 0) {
            PyErr_SetString(PyExc_ValueError, "negative maxlength");
            return NULL;
        }
    }
    uint64_t len;
    if (read_header(self, &len) < 0)
        return NULL;
    if (maxlength >= 0 && len > (uint64_t)maxlength) {
        fm_mutex_unlock(&self->rx->rlock);
        return bad_message_length(self);
    }
    return read_body(self, len);
}

PyDoc_STRVAR(Conn_recv_doc,
"recv($self, /)\n--\n\n"
"Receive a (picklable) object.");

static PyObject *
Conn_recv(FmConnObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_usable(self, 1) < 0)
        return NULL;
    uint64_t len;
    if (read_header(self, &len) < 0)
        return NULL;
    PyObject *b = read_body(self, len);
    if (b == NULL)
        return NULL;
    PyObject *obj = PyObject_CallOneArg(self->loads, b);
    Py_DECREF(b);
    return obj;
}

PyDoc_STRVAR(Conn_recv_bytes_into_doc,
"recv_bytes_into($self, /, buf, offset=0)\n--\n\n"
"Receive bytes data into a writeable bytes-like object.\n"
"Return the number of bytes read.");

static PyObject *
Conn_recv_bytes_into(FmConnObject *self, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames)
{
    PyObject *argv[2];
    static const char *const names[2] = {"buf", "offset"};
    if (fm_parse_args("recv_bytes_into", args, nargs, kwnames, names, 2, 1, argv) < 0)
        return NULL;
    if (check_usable(self, 1) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(argv[0], &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    PyObject *res = NULL;
    Py_ssize_t offset = 0;
    if (argv[1] != NULL && get_index(argv[1], &offset) < 0)
        goto done;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "negative offset");
        goto done;
    }
    if (offset > view.len) {
        PyErr_SetString(PyExc_ValueError, "offset too large");
        goto done;
    }
    uint64_t len;
    if (read_header(self, &len) < 0)
        goto done;
    if (len > (uint64_t)(view.len - offset)) {
        PyObject *b = read_body(self, len);
        if (b != NULL) {
            PyObject *exc = PyObject_GetAttrString((PyObject *)Py_TYPE(self), "_fm_too_short");
            if (exc != NULL) {
                PyErr_SetObject(exc, b);
                Py_DECREF(exc);
            }
            Py_DECREF(b);
        }
        goto done;
    }
    if (read_exact(self, (char *)view.buf + offset, (size_t)len, 0) < 0) {
        fm_mutex_unlock(&self->rx->rlock);
        goto done;
    }
    fm_mutex_unlock(&self->rx->rlock);
    rearm(self);
    res = PyLong_FromUnsignedLongLong(len);
done:
    PyBuffer_Release(&view);
    return res;
}

PyDoc_STRVAR(Conn_poll_doc,
"poll($self, /, timeout=0.0)\n--\n\n"
"Whether there is any input available to be read (or the other end is\n"
"gone: then recv() raises EOFError).  timeout None: wait for it.");

static PyObject *
Conn_poll(FmConnObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *timeout = NULL;
    if (one_arg("poll", "timeout", args, nargs, kwnames, &timeout) < 0)
        return NULL;
    if (check_usable(self, 1) < 0)
        return NULL;
    int64_t deadline = 0;
    if (timeout != NULL && fm_timeout_to_deadline(timeout, &deadline) < 0)
        return NULL;
    uint64_t n = fm_stream_avail(self->rx);
    if (n == (uint64_t)-1)
        return corrupt();
    if (n > 0)
        Py_RETURN_TRUE;
    int w = wait_stream(self, self->rx, 1, deadline);
    if (w < 0)
        return NULL;
    return PyBool_FromLong(w != WAIT_TIMEOUT);
}

PyDoc_STRVAR(Conn_fileno_doc,
"fileno($self, /)\n--\n\n"
"A descriptor that reads ready when recv() would not block: a message\n"
"is there, or the other end is gone (readable ends); the liveness socket\n"
"of a write-only end.");

static PyObject *
Conn_fileno(FmConnObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->closed) {
        PyErr_SetString(PyExc_OSError, "handle is closed");
        return NULL;
    }
    if (self->rx != NULL) {
        _Atomic uint32_t *w = &self->sh->watched[self->rxch];
        if (atomic_load_explicit(w, memory_order_relaxed) == 0)
            atomic_store_explicit(w, 1, memory_order_seq_cst);
        if (fm_stream_avail(self->rx) == 0)
            clear_token(self);
    }
    return PyLong_FromLong(self->livefd);
}

static PyObject *
Conn_close_m(FmConnObject *self, PyObject *Py_UNUSED(ignored))
{
    conn_close(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Conn_fds_doc,
"_fm_fds($self, /)\n--\n\n"
"(memfd, livefd, end): what pickling passes on (as descriptors).");

static PyObject *
Conn_fds(FmConnObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->closed) {
        PyErr_SetString(PyExc_OSError, "handle is closed");
        return NULL;
    }
    return Py_BuildValue("(iii)", self->memfd, self->livefd, self->end);
}

static PyObject *
Conn_get_closed(FmConnObject *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
Conn_get_readable(FmConnObject *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->readable);
}

static PyObject *
Conn_get_writable(FmConnObject *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->writable);
}

static int
Conn_set_readable(FmConnObject *self, PyObject *v, void *Py_UNUSED(c))
{
    int t = v == NULL ? 0 : PyObject_IsTrue(v);
    if (t < 0)
        return -1;
    if (t && self->rx == NULL) {
        PyErr_SetString(PyExc_ValueError, "this end of the pipe cannot read");
        return -1;
    }
    self->readable = t;
    return 0;
}

static int
Conn_set_writable(FmConnObject *self, PyObject *v, void *Py_UNUSED(c))
{
    int t = v == NULL ? 0 : PyObject_IsTrue(v);
    if (t < 0)
        return -1;
    if (t && self->tx == NULL) {
        PyErr_SetString(PyExc_ValueError, "this end of the pipe cannot write");
        return -1;
    }
    self->writable = t;
    return 0;
}

static PyObject *
Conn_get_handle(FmConnObject *self, void *Py_UNUSED(c))
{
    if (self->closed)
        Py_RETURN_NONE;
    return Conn_fileno(self, NULL);
}

static PyMethodDef Conn_methods[] = {
    {"send_bytes", (PyCFunction)(void (*)(void))Conn_send_bytes, METH_FASTCALL | METH_KEYWORDS,
     Conn_send_bytes_doc},
    {"send", (PyCFunction)(void (*)(void))Conn_send, METH_FASTCALL | METH_KEYWORDS,
     Conn_send_doc},
    {"recv_bytes", (PyCFunction)(void (*)(void))Conn_recv_bytes, METH_FASTCALL | METH_KEYWORDS,
     Conn_recv_bytes_doc},
    {"recv_bytes_into", (PyCFunction)(void (*)(void))Conn_recv_bytes_into,
     METH_FASTCALL | METH_KEYWORDS, Conn_recv_bytes_into_doc},
    {"recv", (PyCFunction)Conn_recv, METH_NOARGS, Conn_recv_doc},
    {"poll", (PyCFunction)(void (*)(void))Conn_poll, METH_FASTCALL | METH_KEYWORDS,
     Conn_poll_doc},
    {"fileno", (PyCFunction)Conn_fileno, METH_NOARGS, Conn_fileno_doc},
    {"close", (PyCFunction)Conn_close_m, METH_NOARGS, "close($self, /)\n--\n\nClose the connection."},
    {"_fm_fds", (PyCFunction)Conn_fds, METH_NOARGS, Conn_fds_doc},
    {"_fm_pair", (PyCFunction)(void (*)(void))Conn_pair, METH_FASTCALL | METH_CLASS, Conn_pair_doc},
    {"_fm_attach", (PyCFunction)(void (*)(void))Conn_attach, METH_FASTCALL | METH_CLASS,
     Conn_attach_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Conn_getset[] = {
    {"closed", (getter)Conn_get_closed, NULL, "True if the connection is closed", NULL},
    {"readable", (getter)Conn_get_readable, NULL, "True if the connection is readable", NULL},
    {"writable", (getter)Conn_get_writable, NULL, "True if the connection is writable", NULL},
    {"_readable", (getter)Conn_get_readable, (setter)Conn_set_readable, NULL, NULL},
    {"_writable", (getter)Conn_get_writable, (setter)Conn_set_writable, NULL, NULL},
    {"_handle", (getter)Conn_get_handle, NULL, "fileno(), or None once closed", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Conn_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(FmConnObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* Ends come from _fm_pair and _fm_attach only. */
static PyObject *
Conn_new(PyTypeObject *tp, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    PyErr_Format(PyExc_TypeError, "cannot create '%s' instances: use Pipe()", tp->tp_name);
    return NULL;
}

static PyType_Slot Conn_slots[] = {
    {Py_tp_new, Conn_new},
    {Py_tp_dealloc, Conn_dealloc},
    {Py_tp_traverse, Conn_traverse},
    {Py_tp_clear, Conn_clear},
    {Py_tp_methods, Conn_methods},
    {Py_tp_getset, Conn_getset},
    {Py_tp_members, Conn_members},
    {Py_tp_doc, "One end of a pipe in shared memory (fastmp.connection subclasses it;\n"
                "made by _fm_pair or _fm_attach)."},
    {0, NULL},
};

static PyType_Spec Conn_spec = {
    .name = "fastmp._core.Connection",
    .basicsize = sizeof(FmConnObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Conn_slots,
};

int
fm_connection_add_types(PyObject *module, fm_state *st)
{
    return fm_add_type(module, &Conn_spec, NULL, &st->ConnectionType);
}
