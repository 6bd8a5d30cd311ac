// XNOR + popcount convolution for BI-DiffSR's binary layers (fastdiffsr.nn.xnor_kernel).
//
// Activations a in {-1, 0, +1} (sign of TaR's output; zero padding) are packed per pixel into
// 64-bit words along the channels: s (a > 0) and m (a != 0). Weights sign(W) are packed the
// same way, w (W >= 0), laid out [slots][words][outputs rounded up to 8] so that 8 output
// channels sit side by side. A slot is one tap (kernel position) when C > 32; with C <= 32
// channels, 64 / C taps share a slot's word (tap j of the slot at bits j C ..), so no half-empty
// words are counted. Per output pixel and output channel, exactly in integers:
//   dot(a, sign W) = sum over slots and words of popcount(m) - 2 popcount((s ^ w) & m)
// and the result is dot * alpha[o], as the float simulation computes it.
//
// With AVX-512 VPOPCNTDQ (compiled with -march=native on such a CPU) one instruction counts
// the bits of 8 output channels x 64 input channels; elsewhere a portable loop over
// __builtin_popcountll runs. Rows of the output run in parallel on torch's intra-op threads.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
#include <immintrin.h>
#define FASTDIFFSR_VPOPCNT 1
#else
#define FASTDIFFSR_VPOPCNT 0
#endif

namespace {

// The signs (v > 0) and masks (v != 0) of n <= 64 consecutive channel values, as bits 0..n-1.
inline void pack_word(const float* v, int64_t n, uint64_t& s, uint64_t& m) {
  uint64_t sw = 0, mw = 0;
#if FASTDIFFSR_VPOPCNT
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {  // 16 channels per compare, straight into mask bits
    const auto live = static_cast<__mmask16>(n - j >= 16 ? 0xFFFF : (1u << (n - j)) - 1);
    const __m512 a = _mm512_maskz_loadu_ps(live, v + j);
    sw |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(live, a, zero, _CMP_GT_OQ)) << j;
    mw |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(live, a, zero, _CMP_NEQ_UQ)) << j;
  }
#else
  for (int64_t c = 0; c < n; ++c) {  // branch-free: the signs are unpredictable
    sw |= static_cast<uint64_t>(v[c] > 0) << c;
    mw |= static_cast<uint64_t>(v[c] != 0) << c;
  }
#endif
  s = sw;
  m = mw;
}

// x [B, C, H, W] float -> (signs, masks) int64 [B, H + 2p, W + 2p, words], zero border. Read
// channels-last, so that each pixel's channels are contiguous (the kernel's own output is).
std::vector<torch::Tensor> pack_activations(const torch::Tensor& x_in, int64_t pad) {
  auto x = x_in.to(torch::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t words = (C + 63) / 64, Hp = H + 2 * pad, Wp = W + 2 * pad;
  auto signs = torch::zeros({B, Hp, Wp, words}, torch::kInt64);
  auto masks = torch::zeros({B, Hp, Wp, words}, torch::kInt64);
  const float* xp = x.data_ptr<float>();  // memory order [B, H, W, C]
  auto* sp = reinterpret_cast<uint64_t*>(signs.data_ptr<int64_t>());
  auto* mp = reinterpret_cast<uint64_t*>(masks.data_ptr<int64_t>());
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H;
      for (int64_t xx = 0; xx < W; ++xx) {
        const float* px = xp + (row * W + xx) * C;
        const int64_t at = ((b * Hp + y + pad) * Wp + xx + pad) * words;
        for (int64_t k = 0; k < words; ++k) {
          pack_word(px + 64 * k, std::min<int64_t>(64, C - 64 * k), sp[at + k], mp[at + k]);
        }
      }
    }
  });
  return {signs, masks};
}

}  // namespace

// x [B, C, H, W] in {-1, 0, 1}; weights int64 [slots, words, O8] (see pack_weights in Python);
// alpha [O] float -> [B, H, W, O] float ('same' zero padding, odd k).
torch::Tensor xnor_conv2d(const torch::Tensor& x, const torch::Tensor& weights,
                          const torch::Tensor& alpha, int64_t kernel) {
  TORCH_CHECK(x.dim() == 4 && kernel % 2 == 1, "x must be [B, C, H, W], kernel odd");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), pad = kernel / 2;
  const int64_t taps = kernel * kernel, words = weights.size(1), O8 = weights.size(2);
  const int64_t O = alpha.size(0);
  const int64_t per_slot = C <= 32 ? 64 / C : 1;  // taps per slot (xnor_kernel.taps_per_slot)
  const int64_t slots = (taps + per_slot - 1) / per_slot;
  TORCH_CHECK(weights.size(0) == slots && words == (C + 63) / 64 && O8 % 8 == 0 && O <= O8,
              "weights do not match x and kernel");
  auto packed = pack_activations(x, pad);
  const auto* sp = reinterpret_cast<const uint64_t*>(packed[0].data_ptr<int64_t>());
  const auto* mp = reinterpret_cast<const uint64_t*>(packed[1].data_ptr<int64_t>());
  auto wc = weights.contiguous();
  const auto* wp = reinterpret_cast<const uint64_t*>(wc.data_ptr<int64_t>());
  auto alpha_f = alpha.contiguous().to(torch::kFloat);
  const float* ap = alpha_f.data_ptr<float>();
  auto out = torch::empty({B, H, W, O}, torch::kFloat);
  float* op = out.data_ptr<float>();
  const int64_t Hp = H + 2 * pad, Wp = W + 2 * pad;
  const int64_t n = slots * words;  // (slot, word) pairs per output pixel
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> s(n), m(n);
    std::vector<int64_t> live(n);  // live: the pairs with any non-zero activation
    std::vector<int64_t> acc(O8);
#if FASTDIFFSR_VPOPCNT
    std::vector<__m512i> s8(n), m8(n);  // s and m broadcast to 8 lanes, once per pixel
#endif
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H;
      for (int64_t xx = 0; xx < W; ++xx) {
        int64_t count = 0, ones = 0;  // gather this pixel's words once, for every output
        for (int64_t slot = 0; slot < slots; ++slot) {
          for (int64_t k = 0; k < words; ++k) {
            uint64_t sk = 0, mk = 0;
            for (int64_t j = 0; j < per_slot && slot * per_slot + j < taps; ++j) {
              const int64_t tap = slot * per_slot + j, ky = tap / kernel, kx = tap % kernel;
              const int64_t at = ((b * Hp + y + ky) * Wp + xx + kx) * words + k;
              sk |= sp[at] << (j * C);  // per_slot > 1 only with one word of C <= 32 bits
              mk |= mp[at] << (j * C);
            }
            if (mk == 0) continue;  // padding or all-zero activations: no contribution
            s[count] = sk;
            m[count] = mk;
            ones += __builtin_popcountll(mk);  // sum of popcount(m): the same for every o
            live[count++] = slot * words + k;
          }
        }
#if FASTDIFFSR_VPOPCNT
        for (int64_t i = 0; i < count; ++i) {
          s8[i] = _mm512_set1_epi64(static_cast<int64_t>(s[i]));
          m8[i] = _mm512_set1_epi64(static_cast<int64_t>(m[i]));
        }
#endif
        for (int64_t o = 0; o < O8; o += 8) {  // 8 outputs at once, the sum in a register
#if FASTDIFFSR_VPOPCNT
          __m512i d = _mm512_setzero_si512();  // sum of popcount((s ^ w) & m)
          for (int64_t i = 0; i < count; ++i) {
            const __m512i w = _mm512_loadu_si512(wp + live[i] * O8 + o);
            d = _mm512_add_epi64(d, _mm512_popcnt_epi64(
                _mm512_and_si512(_mm512_xor_si512(s8[i], w), m8[i])));
          }
          _mm512_storeu_si512(acc.data() + o, _mm512_sub_epi64(_mm512_set1_epi64(ones),
                                                                _mm512_slli_epi64(d, 1)));
#else
          for (int64_t j = o; j < o + 8; ++j) {
            int64_t d = 0;
            for (int64_t i = 0; i < count; ++i) {
              d += __builtin_popcountll((s[i] ^ wp[live[i] * O8 + j]) & m[i]);
            }
            acc[j] = ones - 2 * d;
          }
#endif
        }
        float* dst = op + ((b * H + y) * W + xx) * O;
        for (int64_t o = 0; o < O; ++o) dst[o] = static_cast<float>(acc[o]) * ap[o];
      }
    }
  });
  return out;
}

bool vector_popcount() { return FASTDIFFSR_VPOPCNT; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("xnor_conv2d", &xnor_conv2d, "XNOR + popcount binary convolution");
  m.def("vector_popcount", &vector_popcount, "built with AVX-512 VPOPCNTDQ");
}
