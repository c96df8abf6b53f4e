/* BPF programs are compiled for the BPF target, not the kernel's CPU: its types are the
 * generic ones (64-bit long) whatever the target architecture. */
#include <asm-generic/bitsperlong.h>
