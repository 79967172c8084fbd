// Elementwise activations shared by every cell on every backend.
// A value type V used by the cells needs +, -, *, and these overloads: fastrnn::act::tanh,
// sigmoid, relu, relu_grad_mask. Scalars (float, double) are defined here; SIMD vector types and
// CUDA half types add their own overloads next to their definitions.
#pragma once

#include <cmath>

#include "fastrnn/common.h"

namespace fastrnn::act {

FASTRNN_HD float tanh(float x) { return ::tanhf(x); }
FASTRNN_HD double tanh(double x) { return ::tanh(x); }

// 1 / (1 + e^-x): saturates cleanly to 0 or 1 for large |x| (expf overflow gives 1/inf = 0).
FASTRNN_HD float sigmoid(float x) { return 1.0f / (1.0f + ::expf(-x)); }
FASTRNN_HD double sigmoid(double x) { return 1.0 / (1.0 + ::exp(-x)); }

// relu propagates NaN like torch (NaN > 0 is false, but x is returned as-is when x != x).
FASTRNN_HD float relu(float x) { return x > 0.0f || x != x ? x : 0.0f; }
FASTRNN_HD double relu(double x) { return x > 0.0 || x != x ? x : 0.0; }

// Derivative of relu at the output value y = relu(x): 0 where y <= 0, else 1 (NaN included, so
// that a NaN output passes its gradient through, as torch's threshold_backward does).
FASTRNN_HD float relu_grad_mask(float y) { return y <= 0.0f ? 0.0f : 1.0f; }
FASTRNN_HD double relu_grad_mask(double y) { return y <= 0.0 ? 0.0 : 1.0; }

}  // namespace fastrnn::act
