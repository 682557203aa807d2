// addon.h — per-environment state of the addon.
#pragma once
#include <napi.h>

#include <string>

namespace dvs_addon {

struct AddonData {
  Napi::FunctionReference error_factory;  // (code, detail) => DvsError, set by lib/
};

// Throws the library's own error class (DvsError) for an EDVS code.
void throw_dvs(Napi::Env env, int code, const std::string &detail);
// Throws DvsError EDVSINVAL for a malformed argument.
void throw_inval(Napi::Env env, const std::string &what);

}  // namespace dvs_addon
