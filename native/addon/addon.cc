// addon.cc — module initialisation and error construction.
#include "addon.h"

#include "../include/dvs.h"
#include "native_engine.h"
#include "native_node.h"

namespace dvs_addon {

void throw_dvs(Napi::Env env, int code, const std::string &detail) {
  auto *data = env.GetInstanceData<AddonData>();
  std::string msg = detail.empty() ? dvs_strerror(code) : detail;
  if (data && !data->error_factory.IsEmpty()) {
    Napi::Value err = data->error_factory.Call({Napi::Number::New(env, code), Napi::String::New(env, msg)});
    if (!env.IsExceptionPending() && err.IsObject()) {
      napi_throw(env, err);
      return;
    }
    if (env.IsExceptionPending()) return;
  }
  Napi::Error e = Napi::Error::New(env, std::string(dvs_errname(code)) + ": " + msg);
  e.Set("code", Napi::String::New(env, dvs_errname(code)));
  e.ThrowAsJavaScriptException();
}

void throw_inval(Napi::Env env, const std::string &what) { throw_dvs(env, EDVSINVAL, what); }

static Napi::Value SetErrorFactory(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsFunction()) {
    throw_inval(info.Env(), "setErrorFactory expects a function");
    return info.Env().Undefined();
  }
  auto *data = info.Env().GetInstanceData<AddonData>();
  data->error_factory = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

static Napi::Value LastErrorDetail(const Napi::CallbackInfo &info) {
  return Napi::String::New(info.Env(), dvs_last_error_detail());
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  exports.Set("NativeNode", NativeNode::Init(env));
  exports.Set("NativeEngine", NativeEngine::Init(env));
  exports.Set("setErrorFactory", Napi::Function::New(env, SetErrorFactory));
  exports.Set("lastErrorDetail", Napi::Function::New(env, LastErrorDetail));
  Napi::Object layout = Napi::Object::New(env);
  layout.Set("outWhy", kOutWhy);
  layout.Set("outDstGen", kOutDstGen);
  layout.Set("outCallId", kOutCallId);
  layout.Set("outOffLo", kOutOffLo);
  layout.Set("outOffHi", kOutOffHi);
  layout.Set("outTaken", kOutTaken);
  layout.Set("msgBase", kMsgBase);
  layout.Set("msgInts", kMsgInts);
  layout.Set("maxBatch", kMaxBatch);
  layout.Set("releaseBase", kReleaseBase);
  exports.Set("layout", layout);
  return exports;
}

}  // namespace dvs_addon

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return dvs_addon::Init(env, exports); }
NODE_API_MODULE(dvs, InitModule)
