// errors.h — error names, messages and the per-thread failure detail.
#pragma once
#include <string>

namespace dvs {
// Records a human-readable detail for the failure being returned and returns `code`.
int fail(int code, const std::string &detail);
const std::string &last_detail();
void clear_detail();
}  // namespace dvs
