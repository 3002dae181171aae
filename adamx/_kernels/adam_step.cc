// One pass of Adam / AdamW over every float32 leaf of a parameter tree: the fused optimizer step behind
// adamx.apply_step on XLA:CPU (see adamx/_fused.py, which builds this file and registers the handler).
//
// Per element, in float32: the arithmetic of adamx's jitted XLA step (add_l2_regularization / scale_by_adam /
// add_decoupled_weight_decay / scale_by_learning_rate / apply_updates) as XLA:CPU compiles it, hence bitwise the
// same results. XLA rewrites a division by a scalar as a multiplication by its reciprocal, and LLVM contracts a
// product feeding an add into one fused multiply-add, fma(a, b, c) = a * b + c rounded once (on CPUs with FMA;
// without it neither side contracts). This file is compiled with -ffp-contract=off, so the only FMAs are the
// explicit MulAdd calls below, placed where XLA:CPU puts them (tests/test_fused.py checks this bit for bit):
//
//   g  = fma(p, wd, g)                               (coupled L2, adam)
//   m' = fma(g, c1, m * d1)                          (c1 = 1 - b1, d1 = b1)
//   v' = fma(g * g, c2, v * d2)                      (c2 = 1 - b2, d2 = b2; fma(v, d2, g * g * c2) with L2)
//   u  = (m' * (1 / bc1)) / (sqrt(fma(v', 1 / bc2, eps_root)) + eps)
//   u  = fma(p, wd, u)                               (decoupled, adamw)
//   p' = fma(u, neg_lr, p)
//
// Operands: hp (float32[10]: c1 d1 c2 d2 bc1 bc2 eps_root eps wd neg_lr), then the n params, n grads, n mu, n nu.
// Results: n params, n mu, n nu (aliased to their operands by the caller, so the update is in place when the
// caller donates them). Each leaf is read once and written once: 28 bytes per parameter.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Hyper {
  float c1, d1, c2, d2, bc1, bc2, eps_root, eps, wd, neg_lr;
};

struct Leaf {
  const float* p;
  const float* g;
  const float* m;
  const float* v;
  float* p_out;
  float* m_out;
  float* v_out;
  int64_t size;
};

// a * b + c, rounded once where the CPU has FMA (as XLA:CPU's contraction), twice where it has not.
inline float MulAdd(float a, float b, float c) {
#ifdef __FMA__
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// Not inlined, so that the __restrict__ promises hold in the function the vectorizer looks at. In place
// (po == p, ...) they still hold element-wise: each element is read before it is written and no other element is
// touched.
template <bool kL2, bool kDecoupled>
__attribute__((noinline)) void Step(const Hyper h, const float* __restrict__ p, const float* __restrict__ g,
                                    const float* __restrict__ m, const float* __restrict__ v, float* __restrict__ po,
                                    float* __restrict__ mo, float* __restrict__ vo, int64_t begin, int64_t end) {
  // Locals, not h's fields: the compiler cannot prove the stores below leave *h alone, and would reload the fields
  // every iteration instead of vectorizing the loop.
  const float c1 = h.c1, d1 = h.d1, c2 = h.c2, d2 = h.d2, eps_root = h.eps_root, eps = h.eps, wd = h.wd;
  const float neg_lr = h.neg_lr, r1 = 1.0f / h.bc1, r2 = 1.0f / h.bc2;
  for (int64_t j = begin; j < end; ++j) {
    const float pj = p[j];
    float gj = g[j];
    if (kL2) gj = MulAdd(pj, wd, gj);
    const float mj = MulAdd(gj, c1, m[j] * d1);
    // LLVM contracts the other product of this sum when g is itself an FMA (the coupled-L2 case); either way it
    // is the same sum, rounded as XLA:CPU rounds it.
    const float vj = kL2 ? MulAdd(v[j], d2, (gj * gj) * c2) : MulAdd(gj * gj, c2, v[j] * d2);
    float u = (mj * r1) / (std::sqrt(MulAdd(vj, r2, eps_root)) + eps);
    if (kDecoupled) u = MulAdd(pj, wd, u);
    po[j] = MulAdd(u, neg_lr, pj);
    mo[j] = mj;
    vo[j] = vj;
  }
}

template <bool kL2, bool kDecoupled>
void StepRange(const Hyper& h, const std::vector<Leaf>& leaves, int64_t begin, int64_t end) {
  int64_t offset = 0;
  for (const Leaf& leaf : leaves) {
    const int64_t lo = std::max(begin, offset), hi = std::min(end, offset + leaf.size);
    if (lo < hi) {
      Step<kL2, kDecoupled>(h, leaf.p, leaf.g, leaf.m, leaf.v, leaf.p_out, leaf.m_out, leaf.v_out, lo - offset,
                            hi - offset);
    }
    offset += leaf.size;
    if (offset >= end) break;
  }
}

// A pool of worker threads, started on first use and kept for the life of the process (starting threads for each
// call cost ~50 us, as much as the whole step of a 1M-parameter tree). Run(t, fn) calls fn(0), ..., fn(t - 1), and
// returns when all are done: fn(0), and any part no worker has taken, on the calling thread. One Run at a time.
class Pool {
 public:
  static Pool& Get(int64_t workers) {
    static Pool* pool = new Pool(workers);  // never destroyed: no joining at exit
    return *pool;
  }

  void Run(int64_t t, const std::function<void(int64_t)>& fn) {
    std::lock_guard<std::mutex> one_at_a_time(run_mu_);
    std::unique_lock<std::mutex> lock(mu_);
    task_ = &fn;
    n_tasks_ = t;
    next_ = 1;
    remaining_ = t - 1;
    ++generation_;
    wake_.notify_all();
    lock.unlock();
    fn(0);
    lock.lock();
    TakeTasks(lock);
    done_.wait(lock, [&] { return remaining_ == 0; });
    task_ = nullptr;
  }

 private:
  explicit Pool(int64_t workers) {
    for (int64_t i = 0; i < workers; ++i) std::thread([this] { Loop(); }).detach();
  }

  void TakeTasks(std::unique_lock<std::mutex>& lock) {
    while (task_ != nullptr && next_ < n_tasks_) {
      const int64_t k = next_++;
      const std::function<void(int64_t)>* fn = task_;
      lock.unlock();
      (*fn)(k);
      lock.lock();
      if (--remaining_ == 0) done_.notify_all();
    }
  }

  void Loop() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      TakeTasks(lock);
    }
  }

  std::mutex run_mu_, mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t n_tasks_ = 0, next_ = 0, remaining_ = 0;
  uint64_t generation_ = 0;
};

ffi::Error AdamStepImpl(int64_t mode, int64_t threads, int64_t min_per_thread, ffi::RemainingArgs args,
                        ffi::RemainingRets rets) {
  if (args.size() < 1 || (args.size() - 1) % 4 != 0 || rets.size() * 4 != (args.size() - 1) * 3) {
    return ffi::Error::InvalidArgument("adamx adam_step: expected 1 + 4n operands and 3n results");
  }
  const size_t n = (args.size() - 1) / 4;
  auto hp = args.get<ffi::AnyBuffer>(0);
  if (!hp.has_value()) return hp.error();
  if (hp->element_type() != ffi::F32 || hp->element_count() != 10) {
    return ffi::Error::InvalidArgument("adamx adam_step: hyperparameters must be float32[10]");
  }
  const float* hv = static_cast<const float*>(hp->untyped_data());
  const Hyper h{hv[0], hv[1], hv[2], hv[3], hv[4], hv[5], hv[6], hv[7], hv[8], hv[9]};

  std::vector<Leaf> leaves(n);
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    const ffi::AnyBuffer* in[4];
    ffi::ErrorOr<ffi::AnyBuffer> got[4] = {args.get<ffi::AnyBuffer>(1 + i), args.get<ffi::AnyBuffer>(1 + n + i),
                                           args.get<ffi::AnyBuffer>(1 + 2 * n + i),
                                           args.get<ffi::AnyBuffer>(1 + 3 * n + i)};
    for (int k = 0; k < 4; ++k) {
      if (!got[k].has_value()) return got[k].error();
      in[k] = &*got[k];
      if (in[k]->element_type() != ffi::F32 || in[k]->element_count() != got[0]->element_count()) {
        return ffi::Error::InvalidArgument("adamx adam_step: every operand of a leaf must be float32 of one size");
      }
    }
    auto po = rets.get<ffi::AnyBuffer>(i), mo = rets.get<ffi::AnyBuffer>(n + i);
    auto vo = rets.get<ffi::AnyBuffer>(2 * n + i);
    if (!po.has_value()) return po.error();
    if (!mo.has_value()) return mo.error();
    if (!vo.has_value()) return vo.error();
    const int64_t size = static_cast<int64_t>(in[0]->element_count());
    leaves[i] = Leaf{static_cast<const float*>(in[0]->untyped_data()), static_cast<const float*>(in[1]->untyped_data()),
                     static_cast<const float*>(in[2]->untyped_data()), static_cast<const float*>(in[3]->untyped_data()),
                     static_cast<float*>((*po)->untyped_data()), static_cast<float*>((*mo)->untyped_data()),
                     static_cast<float*>((*vo)->untyped_data()), size};
    total += size;
  }

  auto run = [&](int64_t begin, int64_t end) {
    switch (mode) {
      case 1: StepRange<true, false>(h, leaves, begin, end); break;
      case 2: StepRange<false, true>(h, leaves, begin, end); break;
      default: StepRange<false, false>(h, leaves, begin, end); break;
    }
  };
  int64_t t = std::max<int64_t>(1, std::min<int64_t>(threads, total / std::max<int64_t>(1, min_per_thread)));
  if (t == 1) {
    run(0, total);
    return ffi::Error::Success();
  }
  // Contiguous ranges over the concatenated leaves, cut at multiples of 64 elements (whole cache lines).
  auto cut = [&](int64_t k) { return k == t ? total : (total * k / t) / 64 * 64; };
  const std::function<void(int64_t)> part = [&](int64_t k) { run(cut(k), cut(k + 1)); };
  // The pool is sized by the thread budget, not by this call's t: a first call on a small tree must not leave
  // every later, larger one with fewer workers.
  Pool::Get(threads - 1).Run(t, part);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdamxAdamStep, AdamStepImpl,
                              ffi::Ffi::Bind()
                                  .Attr<int64_t>("mode")
                                  .Attr<int64_t>("threads")
                                  .Attr<int64_t>("min_per_thread")
                                  .RemainingArgs()
                                  .RemainingRets());
