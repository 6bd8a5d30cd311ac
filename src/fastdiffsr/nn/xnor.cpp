// XNOR + popcount convolution for BI-DiffSR's binary layers (fastdiffsr.nn.xnor_kernel).
//
// Activations a in {-1, 0, +1} (sign of TaR's output; zero padding) are packed per pixel into
// 64-bit words along the channels: s (a > 0) and m (a != 0). Weights sign(W) are packed the
// same way, w (W >= 0), laid out [slots][words][outputs rounded up to 8] so that 8 output
// channels sit side by side. A slot is one tap (kernel position) when C > 32; with C <= 32
// channels, up to 64 / C horizontally adjacent taps of a kernel row share a slot's word (tap
// (ky, g r + j) at bits j C ..), read from a copy of the packed activations holding r
// side-by-side pixels per word: up to 64 / C taps per popcount, and no word assembled per
// output pixel. Per output pixel and output channel, exactly in integers:
//   dot(a, sign W) = sum over slots and words of popcount(m) - 2 popcount((s ^ w) & m)
// and the result is dot * alpha[o], as the float simulation computes it.
//
// With AVX-512 VPOPCNTDQ (compiled with -march=native on such a CPU) one instruction counts
// the bits of 8 output channels x 64 input channels, and 4 output pixels share each weight
// load; elsewhere a portable loop over __builtin_popcountll runs. Rows of the output run in
// parallel on torch's intra-op threads (compiled with -fopenmp, as torch's own kernels).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__) && defined(__AVX512DQ__) && \
    defined(__AVX512VL__)
#include <immintrin.h>
#define FASTDIFFSR_VPOPCNT 1
#else
#define FASTDIFFSR_VPOPCNT 0
#endif

namespace {

// The signs (a > 0) and masks (a != 0) of a = v + shift (shift: nullptr for none) for n <= 64
// consecutive channel values, as bits 0..n-1. The add is TaR's, in float as torch computes it.
inline void pack_word(const float* v, const float* shift, int64_t n, uint64_t& s, uint64_t& m) {
  uint64_t sw = 0, mw = 0;
#if FASTDIFFSR_VPOPCNT
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {  // 16 channels per compare, straight into mask bits
    const auto live = static_cast<__mmask16>(n - j >= 16 ? 0xFFFF : (1u << (n - j)) - 1);
    __m512 a = _mm512_maskz_loadu_ps(live, v + j);
    if (shift) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(live, shift + j));
    sw |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(live, a, zero, _CMP_GT_OQ)) << j;
    mw |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(live, a, zero, _CMP_NEQ_UQ)) << j;
  }
#else
  for (int64_t c = 0; c < n; ++c) {  // branch-free: the signs are unpredictable
    const float a = shift ? v[c] + shift[c] : v[c];
    sw |= static_cast<uint64_t>(a > 0) << c;
    mw |= static_cast<uint64_t>(a != 0) << c;
  }
#endif
  s = sw;
  m = mw;
}

// One row of a planar (NCHW) x: v = x[b, 0, y, 0], channel planes `plane` floats apart, plus
// shift[c] (nullptr: none) -> s, m [words][W] (zeroed by the caller), bit c % 64 of word c / 64
// of each pixel. A channel at a time along the contiguous row: no channels-last copy of x.
inline void pack_row_planar(const float* v, const float* shift, int64_t plane, int64_t C,
                            int64_t W, uint64_t* s, uint64_t* m) {
  for (int64_t c = 0; c < C; ++c) {
    const float* row = v + c * plane;
    const float add = shift ? shift[c] : 0.0f;
    uint64_t* sk = s + (c / 64) * W;
    uint64_t* mk = m + (c / 64) * W;
    const int64_t bit = c % 64;
    int64_t xx = 0;
#if FASTDIFFSR_VPOPCNT
    const __m256 zero = _mm256_setzero_ps();
    const __m512i one = _mm512_set1_epi64(static_cast<int64_t>(uint64_t{1} << bit));
    for (; xx + 8 <= W; xx += 8) {  // 8 pixels: compare into a mask, OR the bit where it is set
      __m256 a = _mm256_loadu_ps(row + xx);
      if (shift) a = _mm256_add_ps(a, _mm256_set1_ps(add));
      const __m512i sv = _mm512_loadu_si512(sk + xx), mv = _mm512_loadu_si512(mk + xx);
      _mm512_storeu_si512(sk + xx, _mm512_mask_or_epi64(
          sv, _mm256_cmp_ps_mask(a, zero, _CMP_GT_OQ), sv, one));
      _mm512_storeu_si512(mk + xx, _mm512_mask_or_epi64(
          mv, _mm256_cmp_ps_mask(a, zero, _CMP_NEQ_UQ), mv, one));
    }
#endif
    for (; xx < W; ++xx) {  // branch-free: the signs are unpredictable
      const float a = shift ? row[xx] + add : row[xx];
      sk[xx] |= static_cast<uint64_t>(a > 0) << bit;
      mk[xx] |= static_cast<uint64_t>(a != 0) << bit;
    }
  }
}

// x [B, C, H, W] float (+ shift [B, C] float, nullptr: none) -> (signs, masks) int64
// [B, H + 2p, W + 2p, words], zero border. A channels-last x (the kernel's own output is) is
// read a pixel at a time, any other a channel plane row at a time.
std::vector<torch::Tensor> pack_activations(const torch::Tensor& x_in, const float* shift,
                                            int64_t pad) {
  const bool nhwc = x_in.is_contiguous(at::MemoryFormat::ChannelsLast);
  auto x = x_in.to(torch::kFloat).contiguous(nhwc ? at::MemoryFormat::ChannelsLast
                                                  : at::MemoryFormat::Contiguous);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t words = (C + 63) / 64, Hp = H + 2 * pad, Wp = W + 2 * pad;
  auto signs = torch::zeros({B, Hp, Wp, words}, torch::kInt64);
  auto masks = torch::zeros({B, Hp, Wp, words}, torch::kInt64);
  const float* xp = x.data_ptr<float>();
  auto* sp = reinterpret_cast<uint64_t*>(signs.data_ptr<int64_t>());
  auto* mp = reinterpret_cast<uint64_t*>(masks.data_ptr<int64_t>());
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> s_row(nhwc ? 0 : words * W), m_row(nhwc ? 0 : words * W);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H;
      const int64_t at = ((b * Hp + y + pad) * Wp + pad) * words;  // pixel (y, 0), padded
      if (nhwc) {  // memory order [B, H, W, C]
        for (int64_t xx = 0; xx < W; ++xx) {
          for (int64_t k = 0; k < words; ++k) {
            pack_word(xp + (row * W + xx) * C + 64 * k, shift ? shift + b * C + 64 * k : nullptr,
                      std::min<int64_t>(64, C - 64 * k), sp[at + xx * words + k],
                      mp[at + xx * words + k]);
          }
        }
        continue;
      }
      std::fill(s_row.begin(), s_row.end(), 0);
      std::fill(m_row.begin(), m_row.end(), 0);
      pack_row_planar(xp + (b * C * H + y) * W, shift ? shift + b * C : nullptr, H * W, C, W,
                      s_row.data(), m_row.data());
      for (int64_t xx = 0; xx < W; ++xx) {
        for (int64_t k = 0; k < words; ++k) {
          sp[at + xx * words + k] = s_row[k * W + xx];
          mp[at + xx * words + k] = m_row[k * W + xx];
        }
      }
    }
  });
  return {signs, masks};
}

}  // namespace

// x's packed words with r side-by-side pixels per word (C <= 32, r <= 64 / C): word (b, y, x)
// holds pixel x + j at bits j C .. j C + C - 1 for j < r. Built once per layer, so the
// convolution reads every slot's word straight from memory.
torch::Tensor group_pixels(const torch::Tensor& single, int64_t r, int64_t C) {
  const int64_t B = single.size(0), Hp = single.size(1), Wp = single.size(2);
  auto grouped = torch::zeros({B, Hp, Wp, 1}, torch::kInt64);
  const auto* src = reinterpret_cast<const uint64_t*>(single.data_ptr<int64_t>());
  auto* dst = reinterpret_cast<uint64_t*>(grouped.data_ptr<int64_t>());
  at::parallel_for(0, B * Hp, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t xx = 0; xx + r <= Wp; ++xx) {
        uint64_t word = 0;
        for (int64_t j = 0; j < r; ++j) word |= src[row * Wp + xx + j] << (j * C);
        dst[row * Wp + xx] = word;
      }
    }
  });
  return grouped;
}

// One layer's operands. Slot pair i (a slot of taps, one 64-channel word of it) reads the signs
// s_at[i][at] and masks m_at[i][at] for the output pixel whose window starts at word index at.
// The epilogue (BIConv's, nullptr for the bare convolution): TaA, y' = PReLU_slope(y + bias_in)
// + bias_out per sample and output channel ([B, O8] each), then + the residual (``pixels``'
// res), each in float as torch computes it.
struct Layer {
  std::vector<const uint64_t*> s_at, m_at;  // [n]
  const uint64_t* wp;  // weights [n, O8]
  const float* alpha;  // [O8], zero past O
  int64_t words, O, O8;
  const float *bias_in, *slope, *bias_out;
};

// P consecutive output pixels of a row (they share each weight load, and their sums are
// independent chains): dst[q O + o] = alpha[o] * dot(a, sign W) (then the epilogue, with b the
// sample, res the residual at the first pixel), exactly in integers as
//   dot = sum over pairs of popcount(m) - 2 popcount((s ^ w) & m).
template <int P>
inline void pixels(const Layer& L, int64_t at, int64_t b, const float* res, float* dst) {
  const auto n = static_cast<int64_t>(L.s_at.size());
  int64_t ones[P];  // sum of popcount(m): the same for every output channel
  for (int q = 0; q < P; ++q) {
    ones[q] = 0;
    for (int64_t i = 0; i < n; ++i) ones[q] += __builtin_popcountll(L.m_at[i][at + q * L.words]);
  }
  for (int64_t o = 0; o < L.O8; o += 8) {  // 8 outputs per vector
#if FASTDIFFSR_VPOPCNT
    __m512i d[P];  // sum of popcount((s ^ w) & m), 8 outputs per pixel
    for (int q = 0; q < P; ++q) d[q] = _mm512_setzero_si512();
    for (int64_t i = 0; i < n; ++i) {
      const __m512i w = _mm512_loadu_si512(L.wp + i * L.O8 + o);
      const uint64_t* s = L.s_at[i] + at;
      const uint64_t* m = L.m_at[i] + at;
      for (int q = 0; q < P; ++q) {  // 0x28 = (A ^ B) & C in ternary-logic truth-table form
        const __m512i x = _mm512_ternarylogic_epi64(
            _mm512_set1_epi64(static_cast<int64_t>(s[q * L.words])), w,
            _mm512_set1_epi64(static_cast<int64_t>(m[q * L.words])), 0x28);
        d[q] = _mm512_add_epi64(d[q], _mm512_popcnt_epi64(x));
      }
    }
    const __m256 a = _mm256_loadu_ps(L.alpha + o);
    const auto live = static_cast<__mmask8>(L.O - o >= 8 ? 0xFF : (1u << (L.O - o)) - 1);
    for (int q = 0; q < P; ++q) {
      const __m512i dot = _mm512_sub_epi64(_mm512_set1_epi64(ones[q]), _mm512_slli_epi64(d[q], 1));
      __m256 y = _mm256_mul_ps(_mm512_cvtepi64_ps(dot), a);
      if (L.bias_in) {
        y = _mm256_add_ps(y, _mm256_loadu_ps(L.bias_in + b * L.O8 + o));
        const __mmask8 positive = _mm256_cmp_ps_mask(y, _mm256_setzero_ps(), _CMP_GE_OQ);
        y = _mm256_mask_blend_ps(positive, _mm256_mul_ps(_mm256_loadu_ps(L.slope + b * L.O8 + o), y),
                                 y);
        y = _mm256_add_ps(y, _mm256_loadu_ps(L.bias_out + b * L.O8 + o));
      }
      if (res) y = _mm256_add_ps(y, _mm256_maskz_loadu_ps(live, res + q * L.O + o));
      if (live == 0xFF) {
        _mm256_storeu_ps(dst + q * L.O + o, y);  // a masked store is slow on some CPUs (Zen 4)
      } else {
        _mm256_mask_storeu_ps(dst + q * L.O + o, live, y);
      }
    }
#else
    for (int q = 0; q < P; ++q) {
      for (int64_t j = o; j < std::min(o + 8, L.O); ++j) {
        int64_t d = 0;
        for (int64_t i = 0; i < n; ++i) {
          const int64_t k = at + q * L.words;
          d += __builtin_popcountll((L.s_at[i][k] ^ L.wp[i * L.O8 + j]) & L.m_at[i][k]);
        }
        float y = static_cast<float>(ones[q] - 2 * d) * L.alpha[j];
        if (L.bias_in) {
          y = y + L.bias_in[b * L.O8 + j];
          y = y >= 0 ? y : L.slope[b * L.O8 + j] * y;
          y = y + L.bias_out[b * L.O8 + j];
        }
        if (res) y = y + res[q * L.O + j];
        dst[q * L.O + j] = y;
      }
    }
#endif
  }
}

// Per-sample rows [B, n] float of a TaR / TaA table, padded with zeros to [B, n_pad].
torch::Tensor per_sample(const torch::Tensor& t, int64_t B, int64_t n, int64_t n_pad) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == B && t.size(1) == n, "a per-sample table must be [B, ",
              n, "]");
  auto padded = torch::zeros({B, n_pad}, torch::kFloat);
  padded.narrow(1, 0, n).copy_(t);
  return padded;
}

// x [B, C, H, W] (+ shift [B, C]: sign(x + shift) is convolved, else x must be in {-1, 0, 1});
// weights int64 [slots, words, O8] (see pack_weights in Python); alpha [O] float; taa: empty,
// or bias_in, slope, bias_out [B, O]; residual: add x (C = O) -> [B, H, W, O] float ('same'
// zero padding, odd k).
torch::Tensor convolve(const torch::Tensor& x, const torch::Tensor& weights,
                       const torch::Tensor& alpha, int64_t kernel, const torch::Tensor* shift,
                       const std::vector<torch::Tensor>& taa, bool residual) {
  TORCH_CHECK(x.dim() == 4 && kernel % 2 == 1, "x must be [B, C, H, W], kernel odd");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), pad = kernel / 2;
  const int64_t words = weights.size(1), O8 = weights.size(2), O = alpha.size(0);
  const int64_t per_slot = C <= 32 ? 64 / C : 1;  // taps per slot (xnor_kernel.taps_per_slot)
  const int64_t groups = (kernel + per_slot - 1) / per_slot;  // slots per kernel row
  TORCH_CHECK(weights.size(0) == kernel * groups && words == (C + 63) / 64 && O8 % 8 == 0 &&
              O <= O8, "weights do not match x and kernel");
  TORCH_CHECK(!residual || C == O, "a residual needs C = O");
  auto shift_f = shift ? per_sample(*shift, B, C, C) : torch::Tensor();
  auto packed = pack_activations(x, shift ? shift_f.data_ptr<float>() : nullptr, pad);
  const int64_t Hp = H + 2 * pad, Wp = W + 2 * pad;
  std::vector<torch::Tensor> by_r(2 * (per_slot + 1));  // signs and masks, r pixels per word
  by_r[2] = packed[0];
  by_r[3] = packed[1];
  auto wc = weights.contiguous();
  auto alpha8 = torch::zeros({O8}, torch::kFloat);
  alpha8.narrow(0, 0, O).copy_(alpha);
  std::vector<torch::Tensor> taa8;  // bias_in, slope, bias_out as [B, O8]
  for (const auto& t : taa) taa8.push_back(per_sample(t, B, O, O8));
  auto res = residual ? x.to(torch::kFloat).contiguous(at::MemoryFormat::ChannelsLast)
                      : torch::Tensor();
  Layer L{{}, {}, reinterpret_cast<const uint64_t*>(wc.data_ptr<int64_t>()),
          alpha8.data_ptr<float>(), words, O, O8,
          taa8.empty() ? nullptr : taa8[0].data_ptr<float>(),
          taa8.empty() ? nullptr : taa8[1].data_ptr<float>(),
          taa8.empty() ? nullptr : taa8[2].data_ptr<float>()};
  const float* rp = residual ? res.data_ptr<float>() : nullptr;  // [B, H, W, O] memory order
  for (int64_t ky = 0; ky < kernel; ++ky) {
    for (int64_t g = 0; g < groups; ++g) {  // slot (ky, g): taps (ky, g per_slot + j), j < r
      const int64_t r = std::min(per_slot, kernel - g * per_slot);
      if (!by_r[2 * r].defined()) {
        by_r[2 * r] = group_pixels(packed[0], r, C);
        by_r[2 * r + 1] = group_pixels(packed[1], r, C);
      }
      for (int64_t k = 0; k < words; ++k) {
        const int64_t offset = (ky * Wp + g * per_slot) * words + k;
        L.s_at.push_back(reinterpret_cast<const uint64_t*>(by_r[2 * r].data_ptr<int64_t>()) + offset);
        L.m_at.push_back(reinterpret_cast<const uint64_t*>(by_r[2 * r + 1].data_ptr<int64_t>()) +
                         offset);
      }
    }
  }
  auto out = torch::empty({B, H, W, O}, torch::kFloat);
  float* op = out.data_ptr<float>();
  constexpr int P = 4;
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H, at = (b * Hp + y) * Wp * words;
      float* dst = op + row * W * O;
      const float* r = rp ? rp + row * W * O : nullptr;
      int64_t xx = 0;
      for (; xx + P <= W; xx += P) {
        pixels<P>(L, at + xx * words, b, r ? r + xx * O : nullptr, dst + xx * O);
      }
      for (; xx < W; ++xx) pixels<1>(L, at + xx * words, b, r ? r + xx * O : nullptr, dst + xx * O);
    }
  });
  return out;
}

torch::Tensor xnor_conv2d(const torch::Tensor& x, const torch::Tensor& weights,
                          const torch::Tensor& alpha, int64_t kernel) {
  return convolve(x, weights, alpha, kernel, nullptr, {}, false);
}

// BI-DiffSR's BIConv in one pass: TaA(alpha sign(W) * sign(x + shift)) (+ x).
torch::Tensor xnor_biconv(const torch::Tensor& x, const torch::Tensor& weights,
                          const torch::Tensor& alpha, int64_t kernel, const torch::Tensor& shift,
                          const torch::Tensor& bias_in, const torch::Tensor& slope,
                          const torch::Tensor& bias_out, bool residual) {
  return convolve(x, weights, alpha, kernel, &shift, {bias_in, slope, bias_out}, residual);
}

bool vector_popcount() { return FASTDIFFSR_VPOPCNT; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("xnor_conv2d", &xnor_conv2d, "XNOR + popcount binary convolution");
  m.def("xnor_biconv", &xnor_biconv, "TaR, sign, the binary convolution, TaA and the residual");
  m.def("vector_popcount", &vector_popcount, "built with AVX-512 VPOPCNTDQ");
}
