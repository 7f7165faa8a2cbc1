/* module.c: the module fastmp._core itself -- its functions, and its
 * multi-phase init: exec makes each file's types (heap types, kept in the
 * module state, fastmp.h), traverse/clear/free walk the state.  What the
 * files share of CPython (errors, registration, argument parsing) is in
 * glue.c. */
#include "fastmp.h"
#include "pool.h"

#include <limits.h>

/* ------------------------------------------------------ module functions */

PyDoc_STRVAR(after_fork_child_doc,
"_after_fork_child($module, /)\n--\n\n"
"Called in a forked child: take this process's references on inherited\n"
"shared objects.");

static PyObject *
after_fork_child(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    fm_refresh_pid();
    fm_handles_after_fork_child(fm_state_of_module(module));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(release_all_doc,
"_release_all($module, /)\n--\n\n"
"Give back every reference this process holds on shared objects (at exit).");

static PyObject *
release_all(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    fm_handles_release_all(fm_state_of_module(module));
    Py_RETURN_NONE;
}

static void
append_name(const char *name, void *arg)
{
    PyObject *list = arg, *s = PyUnicode_FromString(name);
    if (s == NULL || PyList_Append(list, s) < 0)
        PyErr_Clear();      /* the unlink happened; only the report is lost */
    Py_XDECREF(s);
}

/* The names `walk` (one of shm.c's walks over this process's segments)
 * reports, as a list. */
static PyObject *
segment_names(void (*walk)(void (*cb)(const char *name, void *arg), void *arg))
{
    PyObject *names = PyList_New(0);
    if (names == NULL)
        return NULL;
    walk(append_name, names);
    return names;
}

PyDoc_STRVAR(unlink_own_segments_doc,
"_unlink_own_segments($module, /)\n--\n\n"
"Unlink the segments this process created; return their names.\n"
"Mappings stay valid, but no other process can attach them afterwards.");

static PyObject *
unlink_own_segments(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return segment_names(fm_segment_unlink_own);
}

PyDoc_STRVAR(own_segments_doc,
"_own_segments($module, /)\n--\n\n"
"Names of the segments this process created and has not unlinked.");

static PyObject *
own_segments(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return segment_names(fm_segment_list_own);
}

PyDoc_STRVAR(set_segment_hook_doc,
"_set_segment_hook($module, hook, /)\n--\n\n"
"hook(name) is called for every new shared object: name is the segment\n"
"this process had to create for it, or None.");

/* Set a hook of the module state: a callable, or None for none. */
static PyObject *
set_hook(PyObject **slot, PyObject *hook)
{
    if (hook != Py_None && !PyCallable_Check(hook)) {
        PyErr_SetString(PyExc_TypeError, "hook must be callable or None");
        return NULL;
    }
    Py_XSETREF(*slot, hook == Py_None ? NULL : Py_NewRef(hook));
    Py_RETURN_NONE;
}

static PyObject *
set_segment_hook(PyObject *module, PyObject *hook)
{
    return set_hook(&fm_state_of_module(module)->segment_hook, hook);
}

PyDoc_STRVAR(set_segment_gone_hook_doc,
"_set_segment_gone_hook($module, hook, /)\n--\n\n"
"hook(name) is called whenever this process unlinks a segment before exit\n"
"(a huge shared ctypes block, a queue's old ring, a pool's large entry or\n"
"channel), whoever created it: the resource tracker must forget it.");

static PyObject *
set_segment_gone_hook(PyObject *module, PyObject *hook)
{
    return set_hook(&fm_state_of_module(module)->segment_gone_hook, hook);
}

PyDoc_STRVAR(spin_ns_doc,
"spin_ns($module, value=None, /)\n--\n\n"
"Return how long (ns) a blocked call spins before it sleeps; with a value,\n"
"set it first (0 disables spinning).  Per process.");

static PyObject *
spin_ns(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "spin_ns() takes at most 1 argument");
        return NULL;
    }
    if (nargs == 1 && args[0] != Py_None) {
        long long v = PyLong_AsLongLong(args[0]);
        if (v == -1 && PyErr_Occurred())
            return NULL;
        if (v < 0 || v > 1000000000LL) {
            PyErr_SetString(PyExc_ValueError, "spin_ns must be between 0 and 1e9");
            return NULL;
        }
        atomic_store(&fm_spin_ns, (int64_t)v);
    }
    return PyLong_FromLongLong(atomic_load(&fm_spin_ns));
}

PyDoc_STRVAR(debug_die_after_link_doc,
"_debug_die_after_link($module, fd, /)\n--\n\n"
"Test hook: the next segment this process links into /dev/shm writes its\n"
"name and a newline to descriptor fd, and the process dies of SIGKILL\n"
"there (no segment may be left behind even then).");

static PyObject *
debug_die_after_link(PyObject *module, PyObject *arg)
{
    (void)module;
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < -1 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "fd out of range");
        return NULL;
    }
    fm_shm_die_after_link_fd = (int)fd;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(before_fork_doc,
"_before_fork($module, /)\n--\n\n"
"Called in a process about to fork: take the child's references on this\n"
"process's shared objects now, before the parent can drop any.");

static PyObject *
before_fork(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    fm_handles_before_fork(fm_state_of_module(module));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_before_fork", before_fork, METH_NOARGS, before_fork_doc},
    {"_debug_die_after_link", debug_die_after_link, METH_O, debug_die_after_link_doc},
    {"_after_fork_child", after_fork_child, METH_NOARGS, after_fork_child_doc},
    {"_release_all", release_all, METH_NOARGS, release_all_doc},
    {"_unlink_own_segments", unlink_own_segments, METH_NOARGS, unlink_own_segments_doc},
    {"_own_segments", own_segments, METH_NOARGS, own_segments_doc},
    {"_set_segment_hook", set_segment_hook, METH_O, set_segment_hook_doc},
    {"_set_segment_gone_hook", set_segment_gone_hook, METH_O, set_segment_gone_hook_doc},
    {"spin_ns", (PyCFunction)(void (*)(void))spin_ns, METH_FASTCALL, spin_ns_doc},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------ lifecycle */

/* The C enums that the Python layer passes to or reads from the core, by
 * their C names less the FM_ prefix (POOL_ for the pool's). */
static int
add_enum_constants(PyObject *module)
{
    static const struct { const char *name; int value; } consts[] = {
        {"POOL_MODE_APPLY", FM_MODE_APPLY},
        {"POOL_MODE_APPLY_KW", FM_MODE_APPLY_KW},
        {"POOL_MODE_MAP", FM_MODE_MAP},
        {"POOL_MODE_STARMAP", FM_MODE_STARMAP},
        {"POOL_SLOT_FREE", FM_SLOT_FREE},
        {"POOL_SLOT_STARTING", FM_SLOT_STARTING},
        {"POOL_SLOT_IDLE", FM_SLOT_IDLE},
        {"POOL_SLOT_BUSY", FM_SLOT_BUSY},
        {"POOL_SLOT_INITFAIL", FM_SLOT_INITFAIL},
        {"POOL_SLOT_EXITED", FM_SLOT_EXITED},
        {"POOL_TASK_RUN", FM_TASK_RUN},
        {"POOL_TASK_EXIT", FM_TASK_EXIT},
        {"QUEUE_KIND_QUEUE", FM_QUEUE_KIND_QUEUE},
        {"QUEUE_KIND_JOINABLE", FM_QUEUE_KIND_JOINABLE},
        {"QUEUE_KIND_SIMPLE", FM_QUEUE_KIND_SIMPLE},
    };
    for (size_t i = 0; i < sizeof(consts) / sizeof(consts[0]); i++) {
        if (PyModule_AddIntConstant(module, consts[i].name, consts[i].value) < 0)
            return -1;
    }
    return 0;
}

static int
module_exec(PyObject *module)
{
    fm_state *st = fm_state_of_module(module);
    st->handles.next = st->handles.prev = &st->handles;
    fm_shm_init();

    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL)
        return -1;
    st->BrokenBarrierError = PyObject_GetAttrString(threading, "BrokenBarrierError");
    Py_DECREF(threading);
    if (st->BrokenBarrierError == NULL)
        return -1;
    if (fm_sync_add_types(module, st) < 0)
        return -1;
    if (fm_value_add_types(module, st) < 0)
        return -1;
    if (fm_pool_add_types(module, st) < 0)
        return -1;
    if (fm_queue_add_types(module, st) < 0)
        return -1;
    if (fm_connection_add_types(module, st) < 0)
        return -1;
    if (fm_kv_add_types(module, st) < 0)
        return -1;
    if (PyModule_AddFunctions(module, fm_queue_module_methods) < 0)
        return -1;
    if (fm_pool_result_add_types(module, st) < 0)
        return -1;
    if (PyModule_AddFunctions(module, fm_pool_result_module_methods) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "SEM_VALUE_MAX", FM_SEM_VALUE_MAX) < 0)
        return -1;
    if (PyModule_AddStringConstant(module, "SHM_PREFIX", FM_SHM_PREFIX + 1) < 0)
        return -1;
    return add_enum_constants(module);
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    fm_state *st = fm_state_of_module(module);
    Py_VISIT(st->LockType);
    Py_VISIT(st->RLockType);
    Py_VISIT(st->SemaphoreType);
    Py_VISIT(st->BoundedSemaphoreType);
    Py_VISIT(st->ConditionType);
    Py_VISIT(st->EventType);
    Py_VISIT(st->BarrierType);
    Py_VISIT(st->PoolChannelType);
    Py_VISIT(st->ConnectionType);
    Py_VISIT(st->BrokenBarrierError);
    Py_VISIT(st->segment_hook);
    Py_VISIT(st->BufferWrapperType);
    Py_VISIT(st->SyncBaseType);
    Py_VISIT(st->SynchronizedType);
    Py_VISIT(st->SyncArrayType);
    Py_VISIT(st->SyncStringType);
    Py_VISIT(st->ctypes_kinds);
    Py_VISIT(st->segment_gone_hook);
    Py_VISIT(st->QueueType);
    Py_VISIT(st->Empty);
    Py_VISIT(st->Full);
    Py_VISIT(st->q_dumps);
    Py_VISIT(st->q_loads);
    Py_VISIT(st->ApplyResultType);
    Py_VISIT(st->SharedKVType);
    Py_VISIT(st->PoolTimeoutError);
    Py_VISIT(st->ThreadingEvent);
    return 0;
}

static int
module_clear(PyObject *module)
{
    fm_state *st = fm_state_of_module(module);
    Py_CLEAR(st->LockType);
    Py_CLEAR(st->RLockType);
    Py_CLEAR(st->SemaphoreType);
    Py_CLEAR(st->BoundedSemaphoreType);
    Py_CLEAR(st->ConditionType);
    Py_CLEAR(st->EventType);
    Py_CLEAR(st->BarrierType);
    Py_CLEAR(st->PoolChannelType);
    Py_CLEAR(st->ConnectionType);
    Py_CLEAR(st->BrokenBarrierError);
    Py_CLEAR(st->segment_hook);
    Py_CLEAR(st->BufferWrapperType);
    Py_CLEAR(st->SyncBaseType);
    Py_CLEAR(st->SynchronizedType);
    Py_CLEAR(st->SyncArrayType);
    Py_CLEAR(st->SyncStringType);
    Py_CLEAR(st->ctypes_kinds);
    Py_CLEAR(st->segment_gone_hook);
    Py_CLEAR(st->QueueType);
    Py_CLEAR(st->Empty);
    Py_CLEAR(st->Full);
    Py_CLEAR(st->q_dumps);
    Py_CLEAR(st->q_loads);
    Py_CLEAR(st->ApplyResultType);
    Py_CLEAR(st->SharedKVType);
    Py_CLEAR(st->PoolTimeoutError);
    Py_CLEAR(st->ThreadingEvent);
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
    fm_handles_detach_all(fm_state_of_module((PyObject *)module));
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

PyModuleDef fm_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fastmp._core",
    .m_doc = "fastmp's C core: shared-memory synchronization primitives.",
    .m_size = sizeof(fm_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&fm_module_def);
}
