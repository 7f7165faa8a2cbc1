/* handle.c: a process's references to shared blocks.
 *
 * Every object living in shared memory holds an fm_handle: its segment,
 * offset and payload address here, and the pid of the process whose
 * reference it is.  The block's reference count (in the block header)
 * counts processes: creation and unpickling take one, dealloc gives it
 * back.  A forked child inherits objects without unpickling them, so the
 * fork hook takes a reference for each live handle, and the child gives them
 * all back on its way out (fm_handles_release_all), since a child started by
 * multiprocessing ends in os._exit and never deallocates anything. */
#include "fastmp.h"

#include <errno.h>

static void
link_handle(fm_state *st, fm_handle *h)
{
    fm_handle *head = &st->handles;
    h->next = head->next;
    h->prev = head;
    head->next->prev = h;
    head->next = h;
}

int
fm_handle_new(fm_state *st, fm_handle *h, size_t size, uint32_t tag)
{
    fm_segment *seg, *created;
    uint64_t off;
    char name[FM_SHM_NAME_MAX] = "";
    /* First without making a segment; when one is needed (a new arena, or
     * a huge block), its name is told to the resource tracker before the
     * file exists, so that no instant leaves a file nobody knows of. */
    int s = fm_block_alloc_as(size, tag, NULL, &seg, &off, &created);
    if (s == FM_AGAIN) {
        if (fm_segment_name_reserve(st, name) < 0)
            return -1;
        s = fm_block_alloc_as(size, tag, name, &seg, &off, &created);
        if (s != FM_OK || created == NULL) {
            fm_segment_name_unused(st, name);
            name[0] = '\0';
        }
    }
    if (s != FM_OK) {
        fm_set_error(s);
        return -1;
    }
    h->seg = seg;
    h->offset = off;
    h->ptr = fm_block_payload(seg, off, tag);
    h->pid = fm_self_pid();
    link_handle(st, h);
    /* The hook hears of every new object (None when no segment was made
     * for it): it keeps the resource tracker alive, and a tracker that
     * died must be relaunched (and told again) before it is needed. */
    if (name[0] == '\0' && fm_segment_made(st, NULL) < 0)
        goto error;
    return 0;
error:
    fm_handle_release(h);
    return -1;
}

int
fm_handle_attach(fm_state *st, fm_handle *h, PyObject *name, PyObject *offset, uint32_t tag)
{
    if (!PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "segment name must be str");
        return -1;
    }
    const char *cname = PyUnicode_AsUTF8(name);
    if (cname == NULL)
        return -1;
    unsigned long long off = PyLong_AsUnsignedLongLong(offset);
    if (off == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    fm_segment *seg;
    if (fm_segment_attach(cname, &seg) != FM_OK) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
        return -1;
    }
    void *p = fm_block_payload(seg, off, tag);
    if (p == NULL) {
        PyErr_Format(PyExc_ValueError,
                     "no live shared object of this kind at offset %llu of %U",
                     off, name);
        return -1;
    }
    fm_block_incref(seg, off);
    h->seg = seg;
    h->offset = off;
    h->ptr = p;
    h->pid = fm_self_pid();
    link_handle(st, h);
    return 0;
}

/* Drop this process's reference, running the object's last-release
 * cleanup first when no other process holds one. */
static void
handle_decref(fm_handle *h)
{
    if (h->before_last_release != NULL) {
        if (h->holder_changed != NULL)
            h->holder_changed(h, 0);
        if (!fm_block_decref_unless_last(h->seg, h->offset)) {
            /* not the last: dropped; but the others may all be dead
             * (killed): then nobody else will ever clean up */
            if (h->only_dead_holders_left != NULL && h->only_dead_holders_left(h))
                h->before_last_release(h);
            return;
        }
        h->before_last_release(h);
    }
    fm_block_decref(h->seg, h->offset);
}

void
fm_handle_release(fm_handle *h)
{
    if (h->seg != NULL && h->pid != 0 && h->pid == fm_self_pid())
        handle_decref(h);
    h->pid = 0;
    if (h->prev != NULL) {
        h->prev->next = h->next;
        h->next->prev = h->prev;
        h->prev = h->next = NULL;
    }
}

PyObject *
fm_handle_name(const fm_handle *h)
{
    return PyUnicode_FromString(h->seg->name);
}

/* A fork: the child's references are taken by the parent, before the fork
 * (os.register_at_fork's "before" hook, GIL held from here to the fork, so
 * the list cannot change in between).  Taken in the child instead, they
 * raced the parent: a parent that dropped an object at once (a temporary
 * passed to a Process) could give the block back first, and the child's
 * late reference, released at its exit, freed it a second time: two objects
 * made later then shared one block.  A fork that fails leaves these
 * references behind (its blocks are not reused; the arena goes when its
 * creator exits), as does a child that execs without exiting through
 * fastmp. */
void
fm_handles_before_fork(fm_state *st)
{
    uint32_t me = fm_self_pid();
    for (fm_handle *h = st->handles.next; h != &st->handles; h = h->next)
        if (h->pid == me)
            fm_block_incref(h->seg, h->offset);
    st->fork_parent = me;
}

void
fm_handles_after_fork_child(fm_state *st)
{
    uint32_t me = fm_self_pid();
    uint32_t parent = st->fork_parent;
    st->fork_parent = 0;
    for (fm_handle *h = st->handles.next; h != &st->handles; h = h->next) {
        if (h->pid == 0 || h->pid == me)
            continue;
        /* the parent's own took our reference before the fork; one
         * inherited from further up (a fork no hook saw) takes it now */
        if (parent == 0 || h->pid != parent)
            fm_block_incref(h->seg, h->offset);
        h->pid = me;
        if (h->holder_changed != NULL)
            h->holder_changed(h, 1);
    }
}

void
fm_handles_release_all(fm_state *st)
{
    uint32_t me = fm_self_pid();
    for (fm_handle *h = st->handles.next; h != &st->handles; h = h->next) {
        if (h->pid == me)
            handle_decref(h);
        h->pid = 0;
    }
}

void
fm_handles_detach_all(fm_state *st)
{
    /* The list head lives in the module state, which is freed with the
     * module; at interpreter exit an object may outlive it (the GC clears
     * a type's module before the last instance goes), and its release must
     * not write into the freed head. */
    fm_handle *h = st->handles.next;
    while (h != NULL && h != &st->handles) {
        fm_handle *next = h->next;
        h->prev = h->next = NULL;
        h = next;
    }
    st->handles.next = st->handles.prev = &st->handles;
}
