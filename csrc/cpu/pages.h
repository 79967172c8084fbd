// Page-size advice for the CPU core's large buffers.
#pragma once

#include <cstdint>

namespace fastrnn::cpu {

// Asks the kernel to back the 2 MiB-aligned part of [p, p + bytes) with transparent huge pages
// when it is first touched (Linux madvise(MADV_HUGEPAGE); a no-op elsewhere, for buffers without
// a whole aligned huge page, and where the system disables them). For buffers about to be written
// in full: a fresh multi-megabyte tensor from torch's allocator is a new mapping whose first
// touch otherwise takes a page fault every 4 KiB, and the passes that read it again walk it
// through a TLB that covers a few MiB of 4 KiB pages. Only a hint: errors are ignored.
void advise_huge_pages(const void* p, int64_t bytes);

}  // namespace fastrnn::cpu
