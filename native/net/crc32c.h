// crc32c.h — CRC-32C (Castagnoli), the datagram checksum. Uses the SSE4.2
// crc32 instruction when the CPU has it (checked once at run time) and a
// table otherwise; both give the same value.
#pragma once
#include <cstddef>
#include <cstdint>

namespace dvs::net {

uint32_t crc32c(const uint8_t *p, size_t n, uint32_t crc = 0);

}  // namespace dvs::net
