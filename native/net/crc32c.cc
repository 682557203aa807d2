// crc32c.cc — CRC-32C with runtime dispatch between the SSE4.2 instruction and
// a byte table (reflected polynomial 0x82F63B78).
#include "crc32c.h"

#include <cstring>

namespace dvs::net {
namespace {

struct Table {
  uint32_t t[256];
  Table() {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
  }
};

uint32_t crc_table(const uint8_t *p, size_t n, uint32_t crc) {
  static const Table table;
  crc = ~crc;
  while (n--) crc = table.t[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc_sse42(const uint8_t *p, size_t n, uint32_t crc) {
  uint64_t c = ~crc;
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c = __builtin_ia32_crc32di(c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return ~c32;
}

using CrcFn = uint32_t (*)(const uint8_t *, size_t, uint32_t);
CrcFn pick() { return __builtin_cpu_supports("sse4.2") ? crc_sse42 : crc_table; }
#endif

}  // namespace

uint32_t crc32c(const uint8_t *p, size_t n, uint32_t crc) {
#if defined(__x86_64__)
  static const CrcFn fn = pick();
  return fn(p, n, crc);
#else
  return crc_table(p, n, crc);
#endif
}

}  // namespace dvs::net
