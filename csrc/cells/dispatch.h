// The cell type of a CellKind: with_cell(kind, f) calls f(Cell{}) with the matching cell struct,
// so that a backend instantiates its driver once per cell from one run-time switch.
#pragma once

#include <stdexcept>

#include "cells/gru.h"
#include "cells/lstm.h"
#include "cells/rnn.h"
#include "fastrnn/rnn.h"

namespace fastrnn::cells {

template <class F>
auto with_cell(CellKind kind, F&& f) {
  switch (kind) {
    case CellKind::RnnTanh:
      return f(RnnTanh{});
    case CellKind::RnnRelu:
      return f(RnnRelu{});
    case CellKind::Lstm:
      return f(Lstm{});
    case CellKind::Gru:
      return f(Gru{});
  }
  throw std::invalid_argument("fastrnn: unknown cell kind");
}

}  // namespace fastrnn::cells
