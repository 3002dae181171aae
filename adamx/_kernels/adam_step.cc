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

template <bool kL2, bool kDecoupled>
void Step(const Hyper& h, const Leaf& leaf, int64_t begin, int64_t end) {
  const float* __restrict__ p = leaf.p;
  const float* __restrict__ g = leaf.g;
  const float* __restrict__ m = leaf.m;
  const float* __restrict__ v = leaf.v;
  float* __restrict__ po = leaf.p_out;
  float* __restrict__ mo = leaf.m_out;
  float* __restrict__ vo = leaf.v_out;
  // In place (po == p, ...) the __restrict__ promise still holds element-wise: each element is read before it is
  // written and no other element is touched.
  const float r1 = 1.0f / h.bc1, r2 = 1.0f / h.bc2;
  for (int64_t j = begin; j < end; ++j) {
    const float pj = p[j];
    float gj = g[j];
    if (kL2) gj = MulAdd(pj, h.wd, gj);
    const float mj = MulAdd(gj, h.c1, m[j] * h.d1);
    // LLVM contracts the other product of this sum when g is itself an FMA (the coupled-L2 case); either way it
    // is the same sum, rounded as XLA:CPU rounds it.
    const float vj = kL2 ? MulAdd(v[j], h.d2, (gj * gj) * h.c2) : MulAdd(gj * gj, h.c2, v[j] * h.d2);
    float u = (mj * r1) / (std::sqrt(MulAdd(vj, r2, h.eps_root)) + h.eps);
    if (kDecoupled) u = MulAdd(pj, h.wd, u);
    po[j] = MulAdd(u, h.neg_lr, pj);
    mo[j] = mj;
    vo[j] = vj;
  }
}

template <bool kL2, bool kDecoupled>
void StepRange(const Hyper& h, const std::vector<Leaf>& leaves, int64_t begin, int64_t end) {
  int64_t offset = 0;
  for (const Leaf& leaf : leaves) {
    const int64_t lo = std::max(begin, offset), hi = std::min(end, offset + leaf.size);
    if (lo < hi) Step<kL2, kDecoupled>(h, leaf, lo - offset, hi - offset);
    offset += leaf.size;
    if (offset >= end) break;
  }
}

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
    auto po = rets.get<ffi::AnyBuffer>(i), mo = rets.get<ffi::AnyBuffer>(n + i), vo = rets.get<ffi::AnyBuffer>(2 * n + i);
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
  std::vector<std::thread> workers;
  workers.reserve(t - 1);
  auto cut = [&](int64_t k) { return k == t ? total : (total * k / t) / 64 * 64; };
  for (int64_t k = 1; k < t; ++k) workers.emplace_back(run, cut(k), cut(k + 1));
  run(0, cut(1));
  for (auto& w : workers) w.join();
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
