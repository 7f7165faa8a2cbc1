/* Short names for the C11 memory orders, used by every file that touches
 * words in shared memory.  No Python.h here.
 *
 * Each access to a shared word states its order at the call site
 * (atomic_load_explicit(&w, ACQ)); these names keep those lines short
 * enough to read the protocol, not the spelling.  See docs/design.md for
 * the protocols themselves. */
#ifndef FM_ATOMICS_H
#define FM_ATOMICS_H

#include <stdatomic.h>

#define SEQ memory_order_seq_cst
#define ACQ memory_order_acquire
#define REL memory_order_release
#define RLX memory_order_relaxed

#endif
