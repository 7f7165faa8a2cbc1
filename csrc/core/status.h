/* Status codes of the Python-free core (every file in csrc/core/).
 *
 * Code that runs without the GIL returns one of these; fm_set_error() in
 * glue.c turns it into a Python exception once the GIL is held again. */
#ifndef FM_STATUS_H
#define FM_STATUS_H

enum fm_status {
    FM_OK = 0,          /* done */
    FM_RECOVERED = 1,   /* acquired, but the previous holder had died */
    FM_TIMEOUT = 2,     /* the deadline passed */
    FM_EINTR = 3,       /* interrupted (signal or wait slice): check signals, call again */
    FM_AGAIN = 4,       /* would block (non-blocking call) */
    FM_OVERFLOW = 5,    /* released too many times */
    FM_NOTOWNER = 6,    /* released by a thread that does not own it */
    FM_ERRNO = 7,       /* a system call failed; errno says why */
    FM_NOMEM = 8,       /* shared memory exhausted (too large a request) */
    FM_CORRUPT = 9,     /* a segment does not hold what it should */
    FM_BROKEN = 10,     /* barrier broken */
    FM_PYERR = 11       /* (GIL side only) a Python exception is set */
};

#endif
