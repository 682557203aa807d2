// native_engine.h — the addon's thin wrapper over engine::Engine (the agent's
// data plane thread). Events from the engine thread reach JS through a
// uv_async handle that drains the engine's event queue on the loop thread.
#pragma once
#include <napi.h>
#include <uv.h>

#include <memory>

#include "../engine/engine.h"

namespace dvs_addon {

class NativeEngine : public Napi::ObjectWrap<NativeEngine> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit NativeEngine(const Napi::CallbackInfo &info);
  ~NativeEngine() override;

 private:
  Napi::Value Port(const Napi::CallbackInfo &info);
  Napi::Value AddPeer(const Napi::CallbackInfo &info);
  Napi::Value RemovePeer(const Napi::CallbackInfo &info);
  Napi::Value SetRemote(const Napi::CallbackInfo &info);
  Napi::Value SendControl(const Napi::CallbackInfo &info);
  Napi::Value SetFault(const Napi::CallbackInfo &info);
  Napi::Value SetPartition(const Napi::CallbackInfo &info);
  Napi::Value SetDcs(const Napi::CallbackInfo &info);
  Napi::Value SetMigrating(const Napi::CallbackInfo &info);
  Napi::Value Fence(const Napi::CallbackInfo &info);
  Napi::Value ToProxy(const Napi::CallbackInfo &info);
  Napi::Value Adopt(const Napi::CallbackInfo &info);
  Napi::Value ExpectReplies(const Napi::CallbackInfo &info);
  Napi::Value ForgetReplies(const Napi::CallbackInfo &info);
  Napi::Value Replies(const Napi::CallbackInfo &info, bool expect);
  Napi::Value Repoint(const Napi::CallbackInfo &info);
  Napi::Value Stats(const Napi::CallbackInfo &info);
  Napi::Value Endpoints(const Napi::CallbackInfo &info);
  Napi::Value Reap(const Napi::CallbackInfo &info);
  Napi::Value Close(const Napi::CallbackInfo &info);

  static void OnAsync(uv_async_t *h);
  static void OnPoll(uv_poll_t *h, int status, int events);
  void drive();
  static void Wake(void *self);
  void shutdown();
  bool check_open(Napi::Env env);

  std::unique_ptr<dvs::engine::Engine> engine_;
  uv_async_t *async_ = nullptr;
  uv_poll_t *poll_ = nullptr;  // invoker mode: the event loop drives the engine
  Napi::FunctionReference on_event_;
  Napi::Env env_;
};

}  // namespace dvs_addon
