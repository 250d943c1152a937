// The training loss: mean token cross-entropy, in fp32 whatever the logits' dtype, with a
// hand-written backward. ATen's cross-entropy on bf16 logits first makes an fp32 copy and fp32
// log-probabilities that live until backward (13 GB for 16 x 2048 tokens over a 50k vocab); this
// keeps only the logits (alive anyway) and works through them a chunk of rows at a time, forming
// softmax(z) - onehot(t) straight into a gradient of the logits' dtype.
#pragma once

#include <ATen/core/Tensor.h>

namespace gqe {

// logits [..., V] (fp32 or bf16), targets [...] int64 -> scalar fp32. chunk_elements bounds the
// fp32 temporaries (rows x V per chunk).
at::Tensor token_cross_entropy(const at::Tensor& logits, const at::Tensor& targets, int64_t chunk_elements = 1 << 26);

}  // namespace gqe
