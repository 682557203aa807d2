// native_node.h — the addon's only class: one process attachment (dvs_node)
// seen from JavaScript. A thin layer: numbers (handles, offsets, lengths,
// codes) cross the boundary; payloads are read and written in place through
// one long-lived ArrayBuffer over the arena; results of batched operations
// land in a scratch Int32Array that JS reads without further calls. Operational
// failures are returned as negative EDVS codes (lib/ turns them into
// DvsError); only malformed arguments throw.
#pragma once
#include <napi.h>
#include <uv.h>

#include <atomic>
#include <thread>
#include <vector>

#include "../core/node.h"

namespace dvs_addon {

// Layout of the scratch Int32Array shared with lib/native.ts.
constexpr int kOutWhy = 0;      // WaitReason of the last EDVSAGAIN
constexpr int kOutDstGen = 1;   // destination incarnation of the last call
constexpr int kOutCallId = 2;   // id of the last call
constexpr int kOutOffLo = 3;    // arena offset of the last alloc (low/high 32 bits)
constexpr int kOutOffHi = 4;
constexpr int kOutTaken = 5;    // 1 if the last op's allocated block now belongs to the core
constexpr int kMsgBase = 16;    // first message descriptor
constexpr int kMsgInts = 12;    // ints per descriptor
constexpr int kMaxBatch = 256;  // descriptors per call
constexpr int kReleaseBase = kMsgBase + kMsgInts * kMaxBatch;  // block ids to release
constexpr int kScratchInts = kReleaseBase + kMaxBatch;

// Descriptor fields (offsets within a descriptor).
enum Desc { dKind, dSrcDc, dSrcEp, dSrcNode, dOffLo, dOffHi, dLen, dBits, dStatus, dBlock, dCallId, dSrcGen };

// The arena mapping outlives the attachment while JS still holds views of it.
struct Mapping {
  dvs::Arena *arena;
  std::atomic<int> refs;
};

class NativeNode : public Napi::ObjectWrap<NativeNode> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit NativeNode(const Napi::CallbackInfo &info);
  ~NativeNode() override;
  void DetachForCleanup();
  // Called through the plain-function trampolines (native_node.cc).
  Napi::Value Send(const Napi::CallbackInfo &info);
  Napi::Value Call(const Napi::CallbackInfo &info);
  Napi::Value Receive(const Napi::CallbackInfo &info);
  Napi::Value Replies(const Napi::CallbackInfo &info);
  Napi::Value Reply(const Napi::CallbackInfo &info);
  Napi::Value Arm(const Napi::CallbackInfo &info);
  Napi::Value CallEnd(const Napi::CallbackInfo &info);
  Napi::Value FlushReleases(const Napi::CallbackInfo &info);
  Napi::Value ReceiveSync(const Napi::CallbackInfo &info);
  Napi::Value CallSync(const Napi::CallbackInfo &info);
  Napi::Value SendSync(const Napi::CallbackInfo &info);
  Napi::Value Alloc(const Napi::CallbackInfo &info);

 private:
  struct Op {
    dvs_endpoint *e = nullptr;
    int32_t dst = 0;
    const void *data = nullptr;
    uint32_t len = 0;
    uint32_t block = 0xffffffffu;  // kNone
  };
  bool op_args(const Napi::CallbackInfo &info, Op *op);
  Napi::Value op_done(const Napi::CallbackInfo &info, const Op &op, int r);
  dvs_endpoint *handle(const Napi::CallbackInfo &info, int idx);
  void write_msg(int slot, const dvs_msg &m);
  bool payload_arg(const Napi::CallbackInfo &info, int idx, const void **data, uint32_t *len, uint32_t *block);
  void do_detach(Napi::Env env);

  Napi::Value Arena(const Napi::CallbackInfo &info);
  Napi::Value Scratch(const Napi::CallbackInfo &info);
  Napi::Value Bind(const Napi::CallbackInfo &info);
  Napi::Value Adopt(const Napi::CallbackInfo &info);
  size_t store_handle(dvs_endpoint *e);
  Napi::Value Close(const Napi::CallbackInfo &info);
  Napi::Value Release(const Napi::CallbackInfo &info);
  void release_batch(int n);
  void note_taken(uint32_t block);
  Napi::Value Notify(const Napi::CallbackInfo &info);
  Napi::Value FreeAlloc(const Napi::CallbackInfo &info);
  Napi::Value ArmSpace(const Napi::CallbackInfo &info);
  Napi::Value Verify(const Napi::CallbackInfo &info);
  Napi::Value Reap(const Napi::CallbackInfo &info);
  Napi::Value Stats(const Napi::CallbackInfo &info);
  Napi::Value Ref(const Napi::CallbackInfo &info);
  Napi::Value Unref(const Napi::CallbackInfo &info);
  Napi::Value Detach(const Napi::CallbackInfo &info);
  Napi::Value Info(const Napi::CallbackInfo &info);
  Napi::Value Fast(const Napi::CallbackInfo &info);

  static void OnPoll(uv_poll_t *h, int status, int events);
  static void OnPrepare(uv_prepare_t *h);
  static void OnAsync(uv_async_t *h);
  void fire_wake();
  void learn_wait();

  dvs_node *node_ = nullptr;
  Mapping *mapping_ = nullptr;
  std::vector<dvs_endpoint *> eps_;
  Napi::Reference<Napi::ArrayBuffer> arena_ab_;
  Napi::Reference<Napi::ArrayBuffer> scratch_ab_;
  int32_t *scratch_ = nullptr;
  Napi::FunctionReference on_wake_;
  uv_loop_t *loop_ = nullptr;
  uv_poll_t *poll_ = nullptr;    // doorbell mode
  uv_async_t *async_ = nullptr;  // waiter-thread mode
  // Adaptive polling before the loop sleeps (see OnPrepare).
  uv_prepare_t *prepare_ = nullptr;
  uint64_t aspin_max_ns_ = 50000;
  uint64_t aspin_ns_ = 50000;
  uint64_t polls_ = 0, poll_hits_ = 0;
  uint64_t slept_at_ = 0;  // when the last unsuccessful poll gave up (0 = not sleeping)
  std::thread waiter_;
  std::atomic<bool> stopping_{false};
  bool refed_ = false;
  uint32_t mode_ = 0;
};

}  // namespace dvs_addon
