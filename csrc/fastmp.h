/* fastmp.h: the one header every Python-facing .c file includes. */
#ifndef FASTMP_H
#define FASTMP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "compat.h"

#include "core/atomics.h"
#include "core/futex.h"
#include "core/glibc_compat.h"
#include "core/prims.h"
#include "core/shm.h"
#include "core/status.h"

/* What a block holds (fm_block_header.tag): attaching checks it. */
enum fm_kind {
    FM_KIND_LOCK = 0x4c4b0001,
    FM_KIND_RLOCK = 0x4c4b0002,
    FM_KIND_SEMAPHORE = 0x53450001,
    FM_KIND_CONDITION = 0x434e0001,
    FM_KIND_EVENT = 0x45560001,
    FM_KIND_BARRIER = 0x42520001,
    FM_KIND_VALUE = 0x56410001,     /* value.c: the memory of a shared ctypes object */
    FM_KIND_QUEUE = 0x51550001,         /* queue.c */
};

/* queue.c: what a Queue object is, given by its Python class at creation
 * (exported by the module, module.c, for fastmp.queues). */
enum fm_queue_kind {
    FM_QUEUE_KIND_QUEUE = 0,
    FM_QUEUE_KIND_JOINABLE = 1,
    FM_QUEUE_KIND_SIMPLE = 2,
};

/* A process's reference to a shared block.  Live handles are linked in the
 * module state, so that a forked child can take its own references on every
 * block it inherited, and give them back when it exits. */
typedef struct fm_handle {
    fm_segment *seg;
    uint64_t offset;
    void *ptr;                  /* payload, in this process's mapping */
    uint32_t pid;               /* process owning this reference; 0: none */
    struct fm_handle *prev, *next;
    /* Called (GIL held) before the last reference of all processes is
     * dropped, so the object can free what lives outside its block (a
     * queue's ring segments); NULL for most objects. */
    void (*before_last_release)(struct fm_handle *h);
    /* Optional (objects that also set before_last_release): told when this
     * process takes its reference (joined = 1; a forked child's too) and
     * gives it back (0); and asked, when it was not the last reference,
     * whether every other one belongs to a dead process (1: then
     * before_last_release runs all the same, so a killed holder does not
     * keep what lives outside the block). */
    void (*holder_changed)(struct fm_handle *h, int joined);
    int (*only_dead_holders_left)(struct fm_handle *h);
} fm_handle;

typedef struct {
    PyTypeObject *LockType;
    PyTypeObject *RLockType;
    PyTypeObject *SemaphoreType;
    PyTypeObject *BoundedSemaphoreType;
    PyTypeObject *ConditionType;
    PyTypeObject *EventType;
    PyTypeObject *BarrierType;
    PyTypeObject *PoolChannelType;  /* pool.c */
    PyTypeObject *ConnectionType;   /* connection.c */
    PyObject *BrokenBarrierError;   /* threading.BrokenBarrierError */
    PyObject *segment_hook;         /* called with a new arena's name */
    fm_handle handles;              /* list head of live handles */
    uint32_t fork_parent;           /* pid that took its children's references (handle.c) */
    /* value.c */
    PyTypeObject *BufferWrapperType;
    PyTypeObject *SyncBaseType;
    PyTypeObject *SynchronizedType;
    PyTypeObject *SyncArrayType;
    PyTypeObject *SyncStringType;
    PyObject *ctypes_kinds;         /* {ctypes simple type: its _type_ letter} */
    PyObject *segment_gone_hook;    /* called with a segment's name once unlinked (glue.c) */
    /* queue.c */
    PyTypeObject *QueueType;
    PyObject *Empty, *Full;         /* queue.Empty, queue.Full */
    PyObject *q_dumps, *q_loads;    /* set by fastmp.queues */
    /* pool_result.c */
    PyTypeObject *ApplyResultType;
    uint64_t pool_last_job;         /* job numbers of the pool dispatcher */
    PyObject *PoolTimeoutError;     /* multiprocessing.TimeoutError, imported when needed */
    PyObject *ThreadingEvent;       /* threading.Event, imported when needed */
    /* kv_object.c */
    PyTypeObject *SharedKVType;
} fm_state;

/* handle.c */
int fm_handle_new(fm_state *st, fm_handle *h, size_t size, uint32_t tag);
int fm_handle_attach(fm_state *st, fm_handle *h, PyObject *name, PyObject *offset,
                     uint32_t tag);
void fm_handle_release(fm_handle *h);
PyObject *fm_handle_name(const fm_handle *h);    /* segment name as str */
void fm_handles_before_fork(fm_state *st);
void fm_handles_after_fork_child(fm_state *st);
void fm_handles_release_all(fm_state *st);
/* Unlink every live handle from the module's list (the module is going). */
void fm_handles_detach_all(fm_state *st);

/* Block with the GIL released while `call` returns FM_EINTR, running signal
 * handlers in between (PEP 475); only the first call spins.  `call` can use
 * the variable fm_spin. st ends as the final status, or FM_PYERR. */
#define FM_BLOCKING(st, call)                                                 \
    do {                                                                      \
        int64_t fm_spin = atomic_load_explicit(&fm_spin_ns,                   \
                                               memory_order_relaxed);        \
        for (;;) {                                                            \
            Py_BEGIN_ALLOW_THREADS                                            \
            (st) = (call);                                                    \
            Py_END_ALLOW_THREADS                                              \
            if ((st) != FM_EINTR)                                             \
                break;                                                        \
            if (PyErr_CheckSignals() < 0) {                                   \
                (st) = FM_PYERR;                                              \
                break;                                                        \
            }                                                                 \
            fm_spin = 0;                                                      \
        }                                                                     \
    } while (0)

#include "glue.h"

/* sync.c */
int fm_sync_add_types(PyObject *module, fm_state *st);

/* value.c */
int fm_value_add_types(PyObject *module, fm_state *st);

/* pool.c */
int fm_pool_add_types(PyObject *module, fm_state *st);
/* pool_result.c */
int fm_pool_result_add_types(PyObject *module, fm_state *st);
extern PyMethodDef fm_pool_result_module_methods[];
/* queue.c */
int fm_queue_add_types(PyObject *module, fm_state *st);
extern PyMethodDef fm_queue_module_methods[];
/* kv_object.c */
int fm_kv_add_types(PyObject *module, fm_state *st);
/* connection.c */
int fm_connection_add_types(PyObject *module, fm_state *st);

#endif
