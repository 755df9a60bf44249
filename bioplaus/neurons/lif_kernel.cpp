// Fused LIF scan for bioplaus (CPU, float32). Same maths and the same rounding order as the
// pure-torch scan in spiking.py (and snntorch's Leaky): v = (beta*v + I) - thr*r.
// Neurons are split into chunks across threads; each chunk is scanned over all T steps while
// its state stays in L1, so the whole forward (or backward) is one pass over memory.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kGrain = 2048;

template <int KIND>
inline float surrogate(float u, float k) {
  if constexpr (KIND == 0) {  // atan: (a/2) / (1 + (pi a u / 2)^2)
    const float c = static_cast<float>(M_PI) / 2.0f * k * u;
    return (k / 2.0f) / (1.0f + c * c);
  } else if constexpr (KIND == 1) {  // fast sigmoid: 1 / (1 + k|u|)^2
    const float d = 1.0f + k * std::fabs(u);
    return 1.0f / (d * d);
  } else if constexpr (KIND == 2) {  // sigmoid: k s (1 - s), s = sigmoid(k u)
    const float s = 1.0f / (1.0f + std::exp(-k * u));
    return k * s * (1.0f - s);
  } else {  // triangle: k max(0, 1 - k|u|)
    const float d = 1.0f - k * std::fabs(u);
    return d > 0.0f ? k * d : 0.0f;
  }
}

// One chunk [b, e) of neurons, scanned backwards over all T steps. The flags are template
// arguments so that the inner loop has no branches and vectorises.
template <int KIND, bool ZERO, bool HS, bool HM>
void backward_chunk(int64_t b, int64_t e, int64_t T, int64_t M, const float* __restrict__ V,
                    const float* __restrict__ S, const float* __restrict__ GS,
                    const float* __restrict__ GM, float* __restrict__ G, float beta, float thr,
                    float k) {
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t o = t * M;
    const bool last = (t == T - 1);
    const float* Vt = V + o;
    const float* St = S + o;
    const float* GSt = HS ? GS + o : nullptr;
    const float* GMt = HM ? GM + o : nullptr;
    float* Gt = G + o;
    const float* Gn = G + o + M;
    if (last) {
      for (int64_t j = b; j < e; ++j) {
        float g = 0.0f;
        if constexpr (HS) g = GSt[j] * surrogate<KIND>(Vt[j] - thr, k);
        if constexpr (HM) g += GMt[j];
        Gt[j] = g;
      }
      continue;
    }
    for (int64_t j = b; j < e; ++j) {
      float g = 0.0f;
      if constexpr (HS) g = GSt[j] * surrogate<KIND>(Vt[j] - thr, k);
      if constexpr (HM) g += GMt[j];
      const float carry = Gn[j];
      if constexpr (ZERO) {
        g += beta * carry * (1.0f - St[j]);
      } else {
        g += beta * carry;
      }
      Gt[j] = g;
    }
  }
}

template <int KIND, bool ZERO>
void backward_dispatch(bool hs, bool hm, int64_t b, int64_t e, int64_t T, int64_t M, const float* V,
                       const float* S, const float* GS, const float* GM, float* G, float beta,
                       float thr, float k) {
  if (hs && hm) backward_chunk<KIND, ZERO, true, true>(b, e, T, M, V, S, GS, GM, G, beta, thr, k);
  else if (hs) backward_chunk<KIND, ZERO, true, false>(b, e, T, M, V, S, GS, GM, G, beta, thr, k);
  else if (hm) backward_chunk<KIND, ZERO, false, true>(b, e, T, M, V, S, GS, GM, G, beta, thr, k);
  else backward_chunk<KIND, ZERO, false, false>(b, e, T, M, V, S, GS, GM, G, beta, thr, k);
}

// One chunk [b, e) of neurons over all T steps. A function with restrict pointers and scalar
// arguments, not the parallel_for lambda's body: outlined for OpenMP, that body would read
// beta and thr through references that the stores might alias, and not vectorise.
void forward_chunk(int64_t b, int64_t e, int64_t T, int64_t M, int64_t step, const float* __restrict__ I,
                   float* __restrict__ V, float* __restrict__ S, float beta, float thr, bool zero) {
  for (int64_t t = 0; t < T; ++t) {
    const float* It = I + t * step;
    float* Vt = V + t * M;
    float* St = S + t * M;
    if (t == 0) {
      for (int64_t j = b; j < e; ++j) {
        const float v = It[j];
        Vt[j] = v;
        St[j] = v > thr ? 1.0f : 0.0f;
      }
      continue;
    }
    const float* Vp = Vt - M;
    const float* Sp = St - M;
    if (zero) {
      for (int64_t j = b; j < e; ++j) {
        const float kept = Vp[j] * (1.0f - Sp[j]);
        const float bv = beta * kept;
        const float v = bv + It[j];
        Vt[j] = v;
        St[j] = v > thr ? 1.0f : 0.0f;
      }
    } else {
      for (int64_t j = b; j < e; ++j) {
        const float bv = beta * Vp[j];
        const float a = bv + It[j];
        const float r = Sp[j] * thr;
        const float v = a - r;
        Vt[j] = v;
        St[j] = v > thr ? 1.0f : 0.0f;
      }
    }
  }
}

}  // namespace

// current: [T, ...], or with bcast_T > 0 a single step [...] fed on every one of bcast_T steps
// (a constant input's current, never copied T times).
std::vector<torch::Tensor> lif_forward(torch::Tensor current, double beta_d, double thr_d, bool zero,
                                       int64_t bcast_T) {
  TORCH_CHECK(current.scalar_type() == torch::kFloat32, "LIF kernel: float32 only");
  auto cur = current.contiguous();
  const bool bcast = bcast_T > 0;
  const int64_t T = bcast ? bcast_T : cur.size(0);
  const int64_t M = bcast ? cur.numel() : (T > 0 ? cur.numel() / T : 0);
  const int64_t step = bcast ? 0 : M;
  std::vector<int64_t> shape(cur.sizes().begin(), cur.sizes().end());
  if (bcast) shape.insert(shape.begin(), T);
  auto mem = torch::empty(shape, cur.options());
  auto spk = torch::empty(shape, cur.options());
  const float beta = static_cast<float>(beta_d), thr = static_cast<float>(thr_d);
  const float* I = cur.data_ptr<float>();
  float* V = mem.data_ptr<float>();
  float* S = spk.data_ptr<float>();
  at::parallel_for(0, M, kGrain, [&](int64_t b0, int64_t e0) {
    // A thread may get more than one chunk (always, if parallel_for runs serially): scan
    // them kGrain at a time so that a chunk's state stays in L1 over the T steps.
    for (int64_t b = b0; b < e0; b += kGrain)
      forward_chunk(b, std::min(e0, b + kGrain), T, M, step, I, V, S, beta, thr, zero);
  });
  return {spk, mem};
}

torch::Tensor lif_backward(torch::Tensor grad_spk, torch::Tensor grad_mem, torch::Tensor mem,
                           torch::Tensor spk, double beta_d, double thr_d, bool zero, int64_t kind,
                           double slope_d) {
  const int64_t T = mem.size(0);
  const int64_t M = T > 0 ? mem.numel() / T : 0;
  const bool has_s = grad_spk.defined() && grad_spk.numel() > 0;
  const bool has_m = grad_mem.defined() && grad_mem.numel() > 0;
  auto gs = has_s ? grad_spk.contiguous() : grad_spk;
  auto gm = has_m ? grad_mem.contiguous() : grad_mem;
  auto out = torch::empty_like(mem);
  const float beta = static_cast<float>(beta_d), thr = static_cast<float>(thr_d);
  const float k = static_cast<float>(slope_d);
  const int kd = static_cast<int>(kind);
  const float* V = mem.data_ptr<float>();
  const float* S = spk.data_ptr<float>();
  const float* GS = has_s ? gs.data_ptr<float>() : nullptr;
  const float* GM = has_m ? gm.data_ptr<float>() : nullptr;
  float* G = out.data_ptr<float>();
  at::parallel_for(0, M, kGrain, [&](int64_t b0, int64_t e0) {
    const bool hs = GS != nullptr, hm = GM != nullptr;
    for (int64_t b = b0; b < e0; b += kGrain) {  // kGrain at a time, as the forward
    const int64_t e = std::min(e0, b + kGrain);
#define BIOPLAUS_BWD(KIND)                                                                  \
  (zero ? backward_dispatch<KIND, true>(hs, hm, b, e, T, M, V, S, GS, GM, G, beta, thr, k)  \
        : backward_dispatch<KIND, false>(hs, hm, b, e, T, M, V, S, GS, GM, G, beta, thr, k))
    switch (kd) {
      case 0: BIOPLAUS_BWD(0); break;
      case 1: BIOPLAUS_BWD(1); break;
      case 2: BIOPLAUS_BWD(2); break;
      default: BIOPLAUS_BWD(3); break;
    }
    }
#undef BIOPLAUS_BWD
  });
  return out;
}

// ---------------------------------------------------------------------------------------
// Spike x weight products on bf16 matrix units (AMX), exact to float rounding.
// Spikes are exactly 0 or 1, so they are exact in bf16. A float32 w is the exact sum of three
// bf16 pieces (hi = the top 16 bits of w, mid = those of w - hi, lo = w - hi - mid; see top16).
// Every bf16 x bf16 product is exact in float32 and the matrix unit accumulates in float32,
// so s @ W = s @ hi + s @ mid + s @ lo differs from a float32 GEMM only in the order of the
// float32 additions. The same holds for dW = g^T s with g split in three.

#ifdef CPUBLAS_BRGEMM_BF16BF16F32  // torch >= 2.6: oneDNN ukernels through cpublas
namespace {

constexpr int64_t kNB = 64;   // columns per packed block of B (the ukernel's N)
constexpr int64_t kMB = 256;  // rows of A per ukernel call (fastest of 32-512 measured)
constexpr int64_t kKC = 512;  // K per ukernel call (even: bf16 pairs)

// Exact three-way split by truncation: hi keeps the top 16 bits of w, so r = w - hi is exact
// in float32 with at most 16 significant bits, mid keeps the top 16 bits of r and lo = r - mid
// has at most 8: every piece is a bf16 and hi + mid + lo == w exactly.
inline uint16_t top16(float x, float* rest) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t h = u & 0xFFFF0000u;
  float hf;
  std::memcpy(&hf, &h, 4);
  *rest = x - hf;
  return static_cast<uint16_t>(h >> 16);
}

// Pack a row-major [K, N] bf16 matrix (row stride ld) into VNNI blocks of kNB columns.
torch::Tensor pack_b(const at::BFloat16* src, int64_t K, int64_t N, int64_t ld) {
  auto out = torch::empty({K * N}, torch::dtype(torch::kBFloat16));
  auto* dst = reinterpret_cast<at::BFloat16*>(out.data_ptr());
  for (int64_t n0 = 0; n0 < N; n0 += kNB) {
    const int64_t nb = std::min(kNB, N - n0);
    at::native::cpublas::pack(K, nb, ld, nb, at::kBFloat16, at::kBFloat16, src + n0, dst + K * n0);
  }
  return out;
}

// Split B[k][n] = src[k * sk + n * sn] (float32, [K, N], K even) into three bf16 pieces,
// each written directly in pack_b's VNNI layout: per block of kNB columns, [K/2][nb][2].
std::vector<torch::Tensor> split3_vnni(const float* src, int64_t K, int64_t N, int64_t sk, int64_t sn) {
  std::vector<torch::Tensor> out;
  for (int i = 0; i < 3; ++i) out.push_back(torch::empty({K * N}, torch::dtype(torch::kBFloat16)));
  auto* a = reinterpret_cast<uint16_t*>(out[0].data_ptr());
  auto* b = reinterpret_cast<uint16_t*>(out[1].data_ptr());
  auto* c = reinterpret_cast<uint16_t*>(out[2].data_ptr());
  const int64_t nblocks = (N + kNB - 1) / kNB;
  at::parallel_for(0, nblocks * (K / 2), 64, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t blk = i / (K / 2), kp = i % (K / 2);
      const int64_t n0 = blk * kNB, nb = std::min(kNB, N - n0);
      const int64_t base = K * n0 + kp * nb * 2;
      for (int64_t j = 0; j < nb; ++j)
        for (int64_t h = 0; h < 2; ++h) {
          float r1, r2, r3;
          const int64_t o = base + 2 * j + h;
          a[o] = top16(src[(2 * kp + h) * sk + (n0 + j) * sn], &r1);
          b[o] = top16(r1, &r2);
          c[o] = top16(r2, &r3);
        }
    }
  });
  return out;
}

// C[M, N] = sum_p A_p[M, K] @ B_p[K, N]; A_p row-major (row stride lda), B_p packed by pack_b.
// Blocked over rows (kMB) and over K (kKC, so that one row block's A panels stay in L2 while
// the column blocks of B stream past them, whatever K = T * batch is for a weight gradient).
void brgemm_sum(const std::vector<const at::BFloat16*>& A, const std::vector<const at::BFloat16*>& B,
                float* C, int64_t M, int64_t N, int64_t K, int64_t lda) {
  const int64_t mblocks = (M + kMB - 1) / kMB;
  at::parallel_for(0, mblocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t mi = b; mi < e; ++mi) {
      const int64_t m0 = mi * kMB, mb = std::min(kMB, M - m0);
      for (int64_t k0 = 0; k0 < K; k0 += kKC) {
        const int64_t kc = std::min(kKC, K - k0);
        for (int64_t n0 = 0; n0 < N; n0 += kNB) {
          const int64_t nb = std::min(kNB, N - n0);
          for (size_t p = 0; p < A.size(); ++p)
            at::native::cpublas::brgemm(mb, nb, kc, lda, nb, N, k0 > 0 || p > 0, A[p] + m0 * lda + k0,
                                        B[p] + K * n0 + k0 * nb, C + m0 * N + n0, true);
        }
      }
    }
    at::native::cpublas::brgemm_release(true);
  });
}

}  // namespace

bool bf16_units() { return at::native::cpublas::could_pack(at::kBFloat16); }
#else
bool bf16_units() { return false; }  // an older torch: the float32 GEMMs are used
#endif

// x (float32) -> (bf16 copy, whether the copy is exact): spikes are, real-valued inputs are not.
std::tuple<torch::Tensor, bool> to_bf16_exact(torch::Tensor x) {
  auto xc = x.contiguous();
  auto out = torch::empty(xc.sizes(), xc.options().dtype(torch::kBFloat16));
  const auto* src = reinterpret_cast<const uint32_t*>(xc.data_ptr<float>());
  auto* dst = reinterpret_cast<uint16_t*>(out.data_ptr());
  const int64_t n = xc.numel();
  std::atomic<bool> exact{true};
  at::parallel_for(0, n, 1 << 16, [&](int64_t b, int64_t e) {
    uint32_t low = 0;  // a float is exact in bf16 iff its low 16 bits are zero
    for (int64_t i = b; i < e; ++i) {
      dst[i] = static_cast<uint16_t>(src[i] >> 16);
      low |= src[i] & 0xFFFFu;
    }
    if (low) exact = false;
  });
  return {out, exact.load()};
}

#ifdef CPUBLAS_BRGEMM_BF16BF16F32
// y[M, N] = x[M, K] @ w[N, K]^T with x exact in bf16 (spikes) and w float32 (split in three).
torch::Tensor spike_mm(torch::Tensor xb, torch::Tensor w) {
  auto wc = w.contiguous();
  const int64_t M = xb.size(0), K = xb.size(1), N = wc.size(0);
  TORCH_CHECK(wc.size(1) == K && K % 2 == 0 && xb.is_contiguous(), "spike_mm: shapes");
  auto packed = split3_vnni(wc.data_ptr<float>(), K, N, 1, K);  // B = W^T
  const auto* X = reinterpret_cast<const at::BFloat16*>(xb.data_ptr());
  std::vector<const at::BFloat16*> A, B;
  for (auto& p : packed) {
    A.push_back(X);
    B.push_back(reinterpret_cast<const at::BFloat16*>(p.data_ptr()));
  }
  auto y = torch::empty({M, N}, torch::dtype(torch::kFloat32));
  brgemm_sum(A, B, y.data_ptr<float>(), M, N, K, K);
  return y;
}

// Three bf16 pieces of a contiguous float32 array (same shape), one vectorisable pass.
std::vector<torch::Tensor> split3_lin(const torch::Tensor& src) {
  std::vector<torch::Tensor> out;
  for (int i = 0; i < 3; ++i) out.push_back(torch::empty(src.sizes(), torch::dtype(torch::kBFloat16)));
  const float* x = src.data_ptr<float>();
  auto* a = reinterpret_cast<uint16_t*>(out[0].data_ptr());
  auto* b = reinterpret_cast<uint16_t*>(out[1].data_ptr());
  auto* c = reinterpret_cast<uint16_t*>(out[2].data_ptr());
  at::parallel_for(0, src.numel(), 1 << 15, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float r1, r2, r3;
      a[i] = top16(x[i], &r1);
      b[i] = top16(r1, &r2);
      c[i] = top16(r2, &r3);
    }
  });
  return out;
}

// dW[N, K] = g[M, N]^T @ x[M, K] with x exact in bf16 (spikes, packed once and shared by the
// three products) and g float32 (transposed, then split in three).
torch::Tensor spike_mm_wgrad(torch::Tensor g, torch::Tensor xb) {
  auto gc = g.contiguous();
  const int64_t M = gc.size(0), N = gc.size(1), K = xb.size(1);
  TORCH_CHECK(xb.size(0) == M && M % 2 == 0 && xb.is_contiguous(), "spike_mm_wgrad: shapes");
  auto pieces = split3_lin(gc.t().contiguous());  // A = g^T, [N, M], in three pieces
  auto xpacked = pack_b(reinterpret_cast<const at::BFloat16*>(xb.data_ptr()), M, K, K);
  const auto* XP = reinterpret_cast<const at::BFloat16*>(xpacked.data_ptr());
  std::vector<const at::BFloat16*> A, B;
  for (auto& p : pieces) {
    A.push_back(reinterpret_cast<const at::BFloat16*>(p.data_ptr()));
    B.push_back(XP);
  }
  auto dw = torch::empty({N, K}, torch::dtype(torch::kFloat32));
  brgemm_sum(A, B, dw.data_ptr<float>(), N, K, M, M);
  return dw;
}

#else
torch::Tensor spike_mm(torch::Tensor, torch::Tensor) { TORCH_CHECK(false, "spike_mm: needs torch >= 2.6"); }
torch::Tensor spike_mm_wgrad(torch::Tensor, torch::Tensor) { TORCH_CHECK(false, "spike_mm_wgrad: needs torch >= 2.6"); }
#endif

// ---------------------------------------------------------------------------------------------
// Binary x float products by table lookup (CPUs with AVX-512, no matrix units).
//
// C [M, N] = A [M, K] @ B [K, N] with A binary (spikes). The columns of A are taken four at a
// time: for each group g of four rows of B and each of the 16 bit patterns p, a table holds
// L[g][p] = sum of the rows of B selected by p (built once per 16 columns of B, 15 row adds a
// group). A row of C is then the sum over g of L[g][nibble of A's row at g]: K/4 vector adds
// instead of K multiply-adds, whatever the spike density. Every addend is a float32 sum of
// products s * b with s in {0, 1}, so C differs from a float32 GEMM only in the order of the
// float32 additions: within a group (the table entry), across groups in sequence in blocks of
// kGB groups, and the block sums in sequence. Works for any 0/1 matrix; anything else is
// reported by the packer and the caller falls back to the float32 GEMM.
// BIOPLAUS_NO_X86 builds only the portable paths on x86 too (to check that build here).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(BIOPLAUS_NO_X86)
#define BIOPLAUS_X86 1
#endif
#ifdef BIOPLAUS_X86
#include <immintrin.h>
#ifndef BIOPLAUS_LUT_NZ
#define BIOPLAUS_LUT_NZ 2  // 32 columns a tile, 8 rows a register block (measured fastest of 1, 2, 4)
#endif
namespace {

constexpr int64_t kRows = 16;  // rows of A per nibble panel (kRB of them per register block)
constexpr int64_t kGB = 32;    // groups summed in registers before joining the running sum

#define BIOPLAUS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

BIOPLAUS_AVX512 inline __mmask16 tail_mask(int64_t n) {
  return static_cast<__mmask16>(n >= 16 ? 0xFFFF : ((1u << n) - 1));
}

// Nibble panels of A: P[mb][g][i] = bits j of A[16 mb + i, 4g + j] (rows past M and columns
// past K are 0). ``transposed``: A = S^T for S [K, M] row-major (the weight-gradient case).
// Returns false if S holds anything but 0 and 1.
BIOPLAUS_AVX512 bool pack_panels(const float* S, int64_t M, int64_t K, int64_t ld, bool transposed, uint8_t* P) {
  const int64_t G = (K + 3) / 4, MB = (M + kRows - 1) / kRows;
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  uint32_t bad = 0;
  if (!transposed) {
    std::memset(P, 0, MB * G * kRows);
    for (int64_t m = 0; m < M; ++m) {
      const float* row = S + m * ld;
      uint8_t* dst = P + (m / kRows) * G * kRows + (m % kRows);
      for (int64_t k = 0; k < K; k += 16) {
        const __mmask16 t = tail_mask(K - k);
        const __m512 v = _mm512_maskz_loadu_ps(t, row + k);
        const uint32_t nz = _mm512_mask_cmp_ps_mask(t, v, zero, _CMP_NEQ_UQ);
        bad |= nz & _mm512_mask_cmp_ps_mask(t, v, one, _CMP_NEQ_UQ);
        for (int64_t q = 0; q < 4 && k / 4 + q < G; ++q) dst[(k / 4 + q) * kRows] = (nz >> (4 * q)) & 0xF;
      }
    }
  } else {
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t mb = 0; mb < MB; ++mb) {
        const int64_t m = mb * kRows;
        const __mmask16 t = tail_mask(M - m);
        __m128i b = _mm_setzero_si128();
        for (int64_t j = 0; j < 4 && 4 * g + j < K; ++j) {
          const __m512 v = _mm512_maskz_loadu_ps(t, S + (4 * g + j) * ld + m);
          const __mmask16 nz = _mm512_mask_cmp_ps_mask(t, v, zero, _CMP_NEQ_UQ);
          bad |= nz & _mm512_mask_cmp_ps_mask(t, v, one, _CMP_NEQ_UQ);
          b = _mm_or_si128(b, _mm_maskz_set1_epi8(nz, static_cast<char>(1 << j)));
        }
        _mm_storeu_si128(reinterpret_cast<__m128i*>(P + (mb * G + g) * kRows), b);
      }
    }
  }
  return bad == 0;
}

// Tables hold kNZ vectors of 16 floats per pattern (kCols columns of B per tile); each register
// block sums kRB rows of A, so kRB x kNZ accumulators stay in registers.
constexpr int kNZ = BIOPLAUS_LUT_NZ;
constexpr int64_t kCols = 16 * kNZ;
constexpr int kRB = 16 / kNZ;
constexpr int64_t kGC = 4096 / kNZ / 16;  // groups per table chunk: 256 KB of table

// Table of one chunk of gn groups from g0, columns n0 .. n0 + kCols - 1 of B (zero past K and
// N): L[g][p] = L[g][p without its lowest bit] + B[4 (g0 + g) + lowest bit].
BIOPLAUS_AVX512 void build_lut(const float* B, int64_t K, int64_t N, int64_t ldb, int64_t g0, int64_t gn,
                               int64_t n0, float* L) {
  __mmask16 masks[kNZ];
  for (int h = 0; h < kNZ; ++h) masks[h] = N - n0 - 16 * h > 0 ? tail_mask(N - n0 - 16 * h) : 0;
  for (int64_t g = 0; g < gn; ++g) {
    float* Lg = L + g * 16 * kCols;
    __m512 rows[4][kNZ];
    for (int j = 0; j < 4; ++j) {
      const int64_t k = 4 * (g0 + g) + j;
      for (int h = 0; h < kNZ; ++h)
        rows[j][h] = k < K ? _mm512_maskz_loadu_ps(masks[h], B + k * ldb + n0 + 16 * h) : _mm512_setzero_ps();
    }
    for (int h = 0; h < kNZ; ++h) _mm512_store_ps(Lg + 16 * h, _mm512_setzero_ps());
    for (int p = 1; p < 16; ++p)
      for (int h = 0; h < kNZ; ++h)
        _mm512_store_ps(Lg + p * kCols + 16 * h,
                        _mm512_add_ps(_mm512_load_ps(Lg + (p & (p - 1)) * kCols + 16 * h), rows[__builtin_ctz(p)][h]));
  }
}

// The 16 rows of one panel: running sums [16][kCols] += the table sums of gn groups, in
// register blocks of kRB rows.
BIOPLAUS_AVX512 void lut_block(const uint8_t* Pb, int64_t gn, const float* L, float* sums, bool first) {
  for (int r0 = 0; r0 < kRows; r0 += kRB) {
    __m512 acc[kRB][kNZ];
    for (int i = 0; i < kRB; ++i)
      for (int h = 0; h < kNZ; ++h) acc[i][h] = _mm512_setzero_ps();
    for (int64_t g = 0; g < gn; ++g) {
      const uint8_t* q = Pb + g * kRows + r0;
      const float* Lg = L + g * 16 * kCols;
#pragma GCC unroll 16
      for (int i = 0; i < kRB; ++i) {
        const float* e = Lg + q[i] * kCols;
        for (int h = 0; h < kNZ; ++h) acc[i][h] = _mm512_add_ps(acc[i][h], _mm512_load_ps(e + 16 * h));
      }
    }
    for (int i = 0; i < kRB; ++i)
      for (int h = 0; h < kNZ; ++h) {
        float* d = sums + (r0 + i) * kCols + 16 * h;
        _mm512_store_ps(d, first ? acc[i][h] : _mm512_add_ps(_mm512_load_ps(d), acc[i][h]));
      }
  }
}

// Column tiles [t0, t1) (kCols columns each) of C [M, N] = A (panels P, K columns) @ B [K, N].
// Rows go in chunks of kMC so that their running sums (kMC x kCols floats, 256 KB) and their
// panels stay in cache next to the table chunk while all column tiles pass over them; each
// chunk rebuilds the tables (about 1/10 of its work). A row's additions happen in the same
// order whatever the chunking.
constexpr int64_t kMC = 2048;
BIOPLAUS_AVX512 void bin_mm_tiles(const uint8_t* P, int64_t M, int64_t K, const float* B, int64_t ldb, int64_t N,
                                  float* C, int64_t t0, int64_t t1) {
  const int64_t G = (K + 3) / 4;
  const int64_t rows_max = std::min(M, kMC), MBmax = (rows_max + kRows - 1) / kRows;
  std::vector<float> buf(kGC * 16 * kCols + MBmax * kRows * kCols + 16);
  float* L = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));
  float* sums = L + kGC * 16 * kCols;
  for (int64_t r0 = 0; r0 < M; r0 += kMC) {  // r0 is a multiple of kRows: whole panels
    const int64_t rows = std::min(kMC, M - r0), MB = (rows + kRows - 1) / kRows, mb0 = r0 / kRows;
    for (int64_t t = t0; t < t1; ++t) {  // the chunk's panels stay in cache across the tiles
      const int64_t n0 = t * kCols;
      for (int64_t c0 = 0; c0 < G; c0 += kGC) {
        const int64_t cn = std::min(kGC, G - c0);
        build_lut(B, K, N, ldb, c0, cn, n0, L);
        for (int64_t g0 = 0; g0 < cn; g0 += kGB) {
          const int64_t gn = std::min(kGB, cn - g0);
          for (int64_t mb = 0; mb < MB; ++mb)
            lut_block(P + ((mb0 + mb) * G + c0 + g0) * kRows, gn, L + g0 * 16 * kCols, sums + mb * kRows * kCols,
                      c0 + g0 == 0);
        }
      }
      for (int h = 0; h < kNZ && N - n0 - 16 * h > 0; ++h) {
        const __mmask16 mask = tail_mask(N - n0 - 16 * h);
        for (int64_t m = 0; m < rows; ++m)
          _mm512_mask_storeu_ps(C + (r0 + m) * N + n0 + 16 * h, mask, _mm512_load_ps(sums + m * kCols + 16 * h));
      }
    }
  }
}

bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}

}  // namespace
#endif  // BIOPLAUS_X86

// ---------------------------------------------------------------------------------------------
// The same table lookup in portable C++: GCC/Clang vector extensions (8 or 4 floats), which the
// compiler lowers to the registers of the target it compiles for. Compiled twice: with 8-float
// vectors inlined into functions with target("avx2") (256-bit registers, x86 CPUs without
// AVX-512), and with 4-float vectors into plain functions (the build's baseline, 128 bits:
// SSE2 on x86-64, NEON on AArch64). Same tables, same panels
// and the same order of additions as the AVX-512 code (tables per group, kGB-group blocks summed
// in registers from zero, the block sums in sequence; table chunks are multiples of kGB groups),
// so the three paths give the same bits whatever the tile width.
#if defined(__GNUC__)
namespace lutg {

// Vectors of VW floats that may alias float (tables and sums are floats read and written as vectors).
// A member typedef, not a template argument: an argument would drop the may_alias attribute.
template <int VW> struct Vec;
template <> struct Vec<8> { typedef float type __attribute__((vector_size(32), __may_alias__)); };  // AVX2
template <> struct Vec<4> { typedef float type __attribute__((vector_size(16), __may_alias__)); };  // SSE2, NEON
#define BIOPLAUS_INLINE inline __attribute__((always_inline))
#define BIOPLAUS_VS(V, p) (*reinterpret_cast<V*>(p))
#define BIOPLAUS_VL(V, p) (*reinterpret_cast<const V*>(p))

constexpr int64_t kRows = 16;  // rows of A per nibble panel, as the AVX-512 packer
constexpr int64_t kGB = 32;    // groups summed in registers (the AVX-512 code's kGB: same order)
constexpr int64_t kMC = 2048;  // rows per chunk, as the AVX-512 code

// The AVX-512 packer's panels, in plain loops (vectorised by the compiler where it can).
BIOPLAUS_INLINE bool pack_panels(const float* S, int64_t M, int64_t K, int64_t ld, bool transposed, uint8_t* P) {
  const int64_t G = (K + 3) / 4, MB = (M + kRows - 1) / kRows;
  std::memset(P, 0, MB * G * kRows);
  uint32_t bad = 0;
  if (!transposed) {
    for (int64_t m = 0; m < M; ++m) {
      const float* row = S + m * ld;
      uint8_t* dst = P + (m / kRows) * G * kRows + (m % kRows);
      const int64_t Gf = K / 4;  // whole groups, then the ragged last one
      for (int64_t g = 0; g < Gf; ++g) {
        uint32_t b = 0;
        for (int j = 0; j < 4; ++j) {
          const float v = row[4 * g + j];
          const uint32_t nz = v != 0.0f;  // NaN counts as a spike and as bad, as the AVX-512 packer's
          b |= nz << j;
          bad |= nz & static_cast<uint32_t>(v != 1.0f);
        }
        dst[g * kRows] = static_cast<uint8_t>(b);
      }
      if (Gf < G) {
        uint32_t b = 0;
        for (int64_t k = 4 * Gf; k < K; ++k) {
          const float v = row[k];
          const uint32_t nz = v != 0.0f;
          b |= nz << (k - 4 * Gf);
          bad |= nz & static_cast<uint32_t>(v != 1.0f);
        }
        dst[Gf * kRows] = static_cast<uint8_t>(b);
      }
    }
  } else {
    for (int64_t g = 0; g < G; ++g)
      for (int64_t j = 0; j < 4 && 4 * g + j < K; ++j) {
        const float* src = S + (4 * g + j) * ld;
        for (int64_t mb = 0; mb < MB; ++mb) {
          uint8_t* d = P + (mb * G + g) * kRows;
          const float* s = src + mb * kRows;
          const int64_t n = std::min(kRows, M - mb * kRows);
          for (int64_t i = 0; i < n; ++i) {
            const uint32_t nz = s[i] != 0.0f;
            d[i] |= static_cast<uint8_t>(nz << j);
            bad |= nz & static_cast<uint32_t>(s[i] != 1.0f);
          }
        }
      }
  }
  return bad == 0;
}

// NZ vectors of VW floats per table entry (kCols columns of B per tile), RB rows per register
// block: RB x NZ accumulators.
template <int VW, int NZ, int RB>
struct Lut {
  typedef typename Vec<VW>::type V;
  static_assert(16 % RB == 0, "register blocks must tile a panel's 16 rows");
  static constexpr int64_t kCols = VW * NZ;
  static constexpr int64_t kGC = 4096 / kCols;  // groups per table chunk: 256 KB, a multiple of kGB

  // L[g][p] = L[g][p without its lowest bit] + B[4 (g0 + g) + lowest bit] (zero past K and N).
  static BIOPLAUS_INLINE void build(const float* B, int64_t K, int64_t N, int64_t ldb, int64_t g0, int64_t gn,
                                    int64_t n0, float* L) {
    const int64_t nv = std::min(kCols, N - n0);
    alignas(64) float rows[4][kCols];
    for (int64_t g = 0; g < gn; ++g) {
      float* Lg = L + g * 16 * kCols;
      for (int j = 0; j < 4; ++j) {
        const int64_t k = 4 * (g0 + g) + j;
        if (k < K && nv == kCols) {
          std::memcpy(rows[j], B + k * ldb + n0, sizeof(rows[j]));
        } else {
          std::memset(rows[j], 0, sizeof(rows[j]));
          if (k < K) std::memcpy(rows[j], B + k * ldb + n0, nv * sizeof(float));
        }
      }
      for (int h = 0; h < NZ; ++h) BIOPLAUS_VS(V, Lg + VW * h) = V{};
      for (int p = 1; p < 16; ++p)
        for (int h = 0; h < NZ; ++h)
          BIOPLAUS_VS(V, Lg + p * kCols + VW * h) =
              BIOPLAUS_VL(V, Lg + (p & (p - 1)) * kCols + VW * h) + BIOPLAUS_VL(V, rows[__builtin_ctz(p)] + VW * h);
    }
  }

  // Running sums [16][kCols] of one panel's rows += the table sums of gn groups.
  static BIOPLAUS_INLINE void block(const uint8_t* Pb, int64_t gn, const float* L, float* sums, bool first) {
    for (int r0 = 0; r0 < kRows; r0 += RB) {
      V acc[RB][NZ];
      for (int i = 0; i < RB; ++i)
        for (int h = 0; h < NZ; ++h) acc[i][h] = V{};
      for (int64_t g = 0; g < gn; ++g) {
        const uint8_t* q = Pb + g * kRows + r0;
        const float* Lg = L + g * 16 * kCols;
#pragma GCC unroll 16
        for (int i = 0; i < RB; ++i) {
          const float* e = Lg + q[i] * kCols;
          for (int h = 0; h < NZ; ++h) acc[i][h] += BIOPLAUS_VL(V, e + VW * h);
        }
      }
      for (int i = 0; i < RB; ++i)
        for (int h = 0; h < NZ; ++h) {
          float* d = sums + (r0 + i) * kCols + VW * h;
          BIOPLAUS_VS(V, d) = first ? acc[i][h] : BIOPLAUS_VL(V, d) + acc[i][h];
        }
    }
  }

  // Column tiles [t0, t1) of C [M, N] = A (panels P) @ B [K, N], rows in chunks of kMC.
  static BIOPLAUS_INLINE void tiles(const uint8_t* P, int64_t M, int64_t K, const float* B, int64_t ldb, int64_t N,
                                    float* C, int64_t t0, int64_t t1) {
    const int64_t G = (K + 3) / 4;
    const int64_t rows_max = std::min(M, kMC), MBmax = (rows_max + kRows - 1) / kRows;
    std::vector<float> buf(kGC * 16 * kCols + MBmax * kRows * kCols + 16);
    float* L = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));
    float* sums = L + kGC * 16 * kCols;
    for (int64_t r0 = 0; r0 < M; r0 += kMC) {
      const int64_t rows = std::min(kMC, M - r0), MB = (rows + kRows - 1) / kRows, mb0 = r0 / kRows;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n0 = t * kCols;
        for (int64_t c0 = 0; c0 < G; c0 += kGC) {
          const int64_t cn = std::min(kGC, G - c0);
          build(B, K, N, ldb, c0, cn, n0, L);
          for (int64_t g0 = 0; g0 < cn; g0 += kGB) {
            const int64_t gn = std::min(kGB, cn - g0);
            for (int64_t mb = 0; mb < MB; ++mb)
              block(P + ((mb0 + mb) * G + c0 + g0) * kRows, gn, L + g0 * 16 * kCols, sums + mb * kRows * kCols,
                    c0 + g0 == 0);
          }
        }
        const int64_t nv = std::min(kCols, N - n0);
        for (int64_t m = 0; m < rows; ++m) std::memcpy(C + (r0 + m) * N + n0, sums + m * kCols, nv * sizeof(float));
      }
    }
  }
};

#ifndef BIOPLAUS_LUT256
#define BIOPLAUS_LUT256 2, 4  // NZ, RB: 16 columns a tile, 4 rows a register block (8 of 16 ymm)
#endif
#ifndef BIOPLAUS_LUTP
#define BIOPLAUS_LUTP 4, 2  // portable: 8 accumulators of 4 floats (of 16 SSE / 32 NEON registers)
#endif
using Lut256 = Lut<8, BIOPLAUS_LUT256>;
using LutP = Lut<4, BIOPLAUS_LUTP>;
constexpr int64_t kCols256 = Lut256::kCols, kColsP = LutP::kCols;

bool pack_portable(const float* S, int64_t M, int64_t K, int64_t ld, bool tr, uint8_t* P) {
  return pack_panels(S, M, K, ld, tr, P);
}
void tiles_portable(const uint8_t* P, int64_t M, int64_t K, const float* B, int64_t N, float* C, int64_t t0, int64_t t1) {
  LutP::tiles(P, M, K, B, N, N, C, t0, t1);
}
#ifdef BIOPLAUS_X86
__attribute__((target("avx2"))) bool pack_avx2(const float* S, int64_t M, int64_t K, int64_t ld, bool tr, uint8_t* P) {
  return pack_panels(S, M, K, ld, tr, P);
}
__attribute__((target("avx2"))) void tiles_avx2(const uint8_t* P, int64_t M, int64_t K, const float* B, int64_t N,
                                                float* C, int64_t t0, int64_t t1) {
  Lut256::tiles(P, M, K, B, N, N, C, t0, t1);
}
bool has_avx2() { return __builtin_cpu_supports("avx2"); }
#endif
#undef BIOPLAUS_VS
#undef BIOPLAUS_VL

}  // namespace lutg

// The table-lookup paths this CPU can run, fastest first: "lut512" (AVX-512), "lut256"
// (AVX2), "lutportable" (any CPU the kernel builds on with GCC/Clang).
std::vector<std::string> lut_paths() {
  std::vector<std::string> out;
#ifdef BIOPLAUS_X86
  if (has_avx512()) out.push_back("lut512");
  if (lutg::has_avx2()) out.push_back("lut256");
#endif
  out.push_back("lutportable");
  return out;
}

bool lut_units() {  // the AVX-512 path (kept: the name older callers ask)
#ifdef BIOPLAUS_X86
  return has_avx512();
#else
  return false;
#endif
}

namespace {
int lut_path_id(const std::string& path) {
  const auto have = lut_paths();
  TORCH_CHECK(std::find(have.begin(), have.end(), path) != have.end(), "table lookup path '", path,
              "' is not available on this CPU");
  return path == "lut512" ? 512 : (path == "lut256" ? 256 : 0);
}
}  // namespace

// Panels of a float32 0/1 matrix S [R, C] as the binary left factor A = S (transposed = false:
// A is [R, C]) or A = S^T (transposed: A is [C, R]); (panels, whether S is binary). The panels
// are the same for every path.
std::tuple<torch::Tensor, bool> pack_binary(torch::Tensor S, bool transposed, const std::string& path) {
  [[maybe_unused]] const int id = lut_path_id(path);
  TORCH_CHECK(S.dim() == 2 && S.scalar_type() == torch::kFloat32, "pack_binary: a 2-D float32 matrix");
  auto Sc = S.contiguous();
  const int64_t M = transposed ? Sc.size(1) : Sc.size(0), K = transposed ? Sc.size(0) : Sc.size(1);
  const int64_t G = (K + 3) / 4, MB = (M + lutg::kRows - 1) / lutg::kRows;
  auto P = torch::empty({MB * G * lutg::kRows}, torch::dtype(torch::kUInt8));
  const float* src = Sc.data_ptr<float>();
  uint8_t* dst = P.data_ptr<uint8_t>();
  bool ok;
#ifdef BIOPLAUS_X86
  if (id == 512) ok = pack_panels(src, M, K, Sc.size(1), transposed, dst);
  else if (id == 256) ok = lutg::pack_avx2(src, M, K, Sc.size(1), transposed, dst);
  else
#endif
    ok = lutg::pack_portable(src, M, K, Sc.size(1), transposed, dst);
  return {P, ok};
}

// C [M, N] = A @ B for A binary (panels of ``pack_binary``, M x K) and B float32 [K, N].
torch::Tensor bin_mm(torch::Tensor P, int64_t M, int64_t K, torch::Tensor B, const std::string& path) {
  [[maybe_unused]] const int id = lut_path_id(path);
  auto Bc = B.contiguous();
  TORCH_CHECK(Bc.dim() == 2 && Bc.size(0) == K && Bc.scalar_type() == torch::kFloat32, "bin_mm: B must be [K, N] float32");
  const int64_t G = (K + 3) / 4, MB = (M + lutg::kRows - 1) / lutg::kRows, N = Bc.size(1);
  TORCH_CHECK(P.numel() == MB * G * lutg::kRows, "bin_mm: panels do not match M, K");
  auto C = torch::empty({M, N}, torch::dtype(torch::kFloat32));
  const uint8_t* Pp = P.data_ptr<uint8_t>();
  const float* Bp = Bc.data_ptr<float>();
  float* Cp = C.data_ptr<float>();
#ifdef BIOPLAUS_X86
  if (id == 512) {
    at::parallel_for(0, (N + kCols - 1) / kCols, 1, [&](int64_t t0, int64_t t1) { bin_mm_tiles(Pp, M, K, Bp, N, N, Cp, t0, t1); });
    return C;
  }
  if (id == 256) {
    at::parallel_for(0, (N + lutg::kCols256 - 1) / lutg::kCols256, 1,
                     [&](int64_t t0, int64_t t1) { lutg::tiles_avx2(Pp, M, K, Bp, N, Cp, t0, t1); });
    return C;
  }
#endif
  at::parallel_for(0, (N + lutg::kColsP - 1) / lutg::kColsP, 1,
                   [&](int64_t t0, int64_t t1) { lutg::tiles_portable(Pp, M, K, Bp, N, Cp, t0, t1); });
  return C;
}
#else  // not GCC/Clang: the float32 GEMMs are used
std::vector<std::string> lut_paths() { return {}; }
bool lut_units() { return false; }
std::tuple<torch::Tensor, bool> pack_binary(torch::Tensor, bool, const std::string&) { TORCH_CHECK(false, "pack_binary: needs GCC or Clang"); }
torch::Tensor bin_mm(torch::Tensor, int64_t, int64_t, torch::Tensor, const std::string&) { TORCH_CHECK(false, "bin_mm: needs GCC or Clang"); }
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &lif_forward, "LIF scan forward");
  m.def("backward", &lif_backward, "LIF scan backward (adjoint)");
  m.def("bf16_units", &bf16_units, "whether bf16 ukernels (brgemm) are available");
  m.def("to_bf16_exact", &to_bf16_exact, "bf16 copy and whether it is exact");
  m.def("spike_mm", &spike_mm, "x @ w^T, x exact in bf16, w split in three bf16 pieces");
  m.def("spike_mm_wgrad", &spike_mm_wgrad, "g^T @ x, x exact in bf16, g split in three");
  m.def("lut_units", &lut_units, "whether the AVX-512 table-lookup products can run");
  m.def("lut_paths", &lut_paths, "the table-lookup paths this CPU can run, fastest first");
  m.def("pack_binary", &pack_binary, "nibble panels of a 0/1 matrix (or of its transpose)", py::arg("S"),
        py::arg("transposed"), py::arg("path") = "lut512");
  m.def("bin_mm", &bin_mm, "A @ B for A binary (panels) and B float32, by table lookup", py::arg("P"), py::arg("M"),
        py::arg("K"), py::arg("B"), py::arg("path") = "lut512");
}
