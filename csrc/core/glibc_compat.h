/* glibc_compat.h: link against old glibc symbol versions, so one wheel runs on old systems.
 *
 * A binary records, for each libc function it calls, the symbol version the build host's glibc
 * marks as default, and refuses to load where that version is missing.  Recent glibc gave new
 * versions to functions fastmp calls: pthread_create, pthread_join, pthread_once, shm_open and
 * shm_unlink moved into libc.so.6 in 2.34 (from libpthread and librt), pthread_sigmask in 2.32,
 * fstat became a real symbol in 2.33 (an inline call of __fxstat before), and getrandom is 2.25.
 * Built as is on a current distribution, _core would need glibc 2.34 (tag manylinux_2_34).
 *
 * What this header does, only when the headers are glibc's, on x86_64 and aarch64 (the
 * platforms wheels are built for; any other build keeps the defaults):
 *   - `.symver` binds the moved functions to their first version (GLIBC_2.2.5 on x86_64,
 *     GLIBC_2.17 on aarch64, the oldest each architecture has).  New glibc keeps those as
 *     compatibility symbols in libc.so.6; old glibc defines them in libpthread.so.0 and
 *     librt.so.1, which setup.py names as needed libraries so that they are loaded there.
 *   - fstat and getrandom go straight to the kernel through syscall(2) (glibc's struct stat is
 *     the kernel's on both architectures); getrandom falls back to /dev/urandom on kernels
 *     older than 3.17, which lack the system call.  So that the same code builds against old
 *     glibc headers (manylinux2014's, 2.17), <sys/random.h> is included only where it exists,
 *     and SYS_getrandom and O_TMPFILE get their values where the headers lack them.
 * The newest symbol version left is then clock_gettime@GLIBC_2.17: wheels get the manylinux2014 tag
 * (manylinux_2_17).  musl has no symbol versions and is left alone.
 *
 * Include it before the first call of any of these functions, after Python.h where that is
 * included, instead of <sys/random.h> (missing before glibc 2.25); it includes the system
 * headers it overrides. */
#ifndef FM_GLIBC_COMPAT_H
#define FM_GLIBC_COMPAT_H

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#if !defined(__GLIBC__) || __GLIBC_PREREQ(2, 25)
#include <sys/random.h>     /* declares getrandom, before the macro below renames it */
#endif

#if defined(__GLIBC__) && (defined(__x86_64__) || defined(__aarch64__))

#if defined(__x86_64__)
#define FM_GLIBC_BASE "GLIBC_2.2.5"
#ifndef SYS_getrandom       /* kernel headers older than 3.17 (manylinux2014's) */
#define SYS_getrandom 318
#endif
#else
#define FM_GLIBC_BASE "GLIBC_2.17"
#ifndef SYS_getrandom
#define SYS_getrandom 278
#endif
#endif

#define FM_GLIBC_OLD(fn) __asm__(".symver " #fn "," #fn "@" FM_GLIBC_BASE)

#if __GLIBC_PREREQ(2, 32)
FM_GLIBC_OLD(pthread_sigmask);
#endif
#if __GLIBC_PREREQ(2, 34)
FM_GLIBC_OLD(pthread_create);
FM_GLIBC_OLD(pthread_join);
FM_GLIBC_OLD(pthread_once);
FM_GLIBC_OLD(shm_open);
FM_GLIBC_OLD(shm_unlink);
#endif

#undef FM_GLIBC_OLD

/* glibc 2.19 named O_TMPFILE; manylinux2014's 2.17 headers may not.  The value is the kernel's
 * on both architectures; a kernel without it (before 3.11) refuses the open with EISDIR, which
 * csrc/core/shm.c answers by naming the segment first. */
#ifndef O_TMPFILE
#define O_TMPFILE (020000000 | O_DIRECTORY)
#endif

static inline int
fm_compat_fstat(int fd, struct stat *sb)
{
    return (int)syscall(SYS_fstat, fd, sb);
}
#define fstat(fd, sb) fm_compat_fstat((fd), (sb))

/* Same contract as getrandom(2) with flags 0: a short count is possible, -1 with errno. */
static inline ssize_t
fm_compat_getrandom(void *buf, size_t len, unsigned int flags)
{
    long n = syscall(SYS_getrandom, buf, len, flags);
    if (n >= 0 || errno != ENOSYS)
        return (ssize_t)n;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, buf, len);
    int saved = errno;
    close(fd);
    errno = saved;
    return got;
}
#define getrandom(buf, len, flags) fm_compat_getrandom((buf), (len), (flags))

/* memfd_create came in glibc 2.27 (the system call in Linux 3.17), and since glibc 2.28 a
 * call to fcntl links to fcntl64: both go to the kernel directly.  fcntl here takes exactly
 * three arguments (a two-argument call does not compile, rather than link to fcntl64). */
#ifndef SYS_memfd_create
#if defined(__x86_64__)
#define SYS_memfd_create 319
#else
#define SYS_memfd_create 279
#endif
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
static inline int
fm_compat_memfd_create(const char *name, unsigned int flags)
{
    return (int)syscall(SYS_memfd_create, name, flags);
}
#define memfd_create(name, flags) fm_compat_memfd_create((name), (flags))

static inline int
fm_compat_fcntl(int fd, int cmd, long arg)
{
    return (int)syscall(SYS_fcntl, fd, cmd, arg);
}
#define fcntl(fd, cmd, arg) fm_compat_fcntl((fd), (cmd), (long)(arg))

#endif /* glibc on x86_64 or aarch64 */

#endif /* FM_GLIBC_COMPAT_H */
