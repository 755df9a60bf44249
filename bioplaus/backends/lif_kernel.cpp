// Fused LIF scan for bioplaus (CPU, float32). Same maths and the same rounding order as the
// pure-torch scan in spiking.py (and snntorch's Leaky): v = (beta*v + I) - thr*r.
// Neurons are split into chunks across threads; each chunk is scanned over all T steps while
// its state stays in L1, so the whole forward (or backward) is one pass over memory.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kGrain = 2048;

inline float surrogate(int kind, float u, float k) {
  switch (kind) {
    case 0: {  // atan: (a/2) / (1 + (pi a u / 2)^2)
      const float c = static_cast<float>(M_PI) / 2.0f * k * u;
      return (k / 2.0f) / (1.0f + c * c);
    }
    case 1: {  // fast sigmoid: 1 / (1 + k|u|)^2
      const float d = 1.0f + k * std::fabs(u);
      return 1.0f / (d * d);
    }
    case 2: {  // sigmoid: k s (1 - s), s = sigmoid(k u)
      const float s = 1.0f / (1.0f + std::exp(-k * u));
      return k * s * (1.0f - s);
    }
    default: {  // triangle: k max(0, 1 - k|u|)
      const float d = 1.0f - k * std::fabs(u);
      return d > 0.0f ? k * d : 0.0f;
    }
  }
}

}  // namespace

std::vector<torch::Tensor> lif_forward(torch::Tensor current, double beta_d, double thr_d, bool zero) {
  TORCH_CHECK(current.scalar_type() == torch::kFloat32, "LIF kernel: float32 only");
  auto cur = current.contiguous();
  const int64_t T = cur.size(0);
  const int64_t M = T > 0 ? cur.numel() / T : 0;
  auto mem = torch::empty_like(cur);
  auto spk = torch::empty_like(cur);
  const float beta = static_cast<float>(beta_d), thr = static_cast<float>(thr_d);
  const float* I = cur.data_ptr<float>();
  float* V = mem.data_ptr<float>();
  float* S = spk.data_ptr<float>();
  at::parallel_for(0, M, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t t = 0; t < T; ++t) {
      const float* It = I + t * M;
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
  at::parallel_for(0, M, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t o = t * M;
      const bool last = (t == T - 1);
      for (int64_t j = b; j < e; ++j) {
        float g = 0.0f;
        if (GS) g = GS[o + j] * surrogate(kd, V[o + j] - thr, k);
        if (GM) g += GM[o + j];
        if (!last) {
          const float carry = G[o + M + j];
          g += zero ? beta * carry * (1.0f - S[o + j]) : beta * carry;
        }
        G[o + j] = g;
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &lif_forward, "LIF scan forward");
  m.def("backward", &lif_backward, "LIF scan backward (adjoint)");
}
