"""The compiled core's ABI constants, read once from the compiled module.

Op codes, nonlinearity codes, status codes, the widths of an op row and the
meaning of each column are defined once, in the X-macro lists of
``_ext/include/convkernel/abi.hpp``; ``sklearn_convkernel._core.abi()``
returns them and this module exposes them under the names C++ uses:

* ``OP_<NAME>`` -- operation codes (``OP_CONV``, ``OP_NONLIN``, ...);
* ``FN_<NAME>`` -- nonlinearity codes (``FN_RELU``, ``FN_EXP``, ...);
* ``STATUS_<NAME>`` -- status codes of the entry points;
* ``N_INT``, ``N_FLOAT`` -- row widths of the integer and float op tables,
  ``TAPE_FACTORS`` -- per-position factors a nonlinearity records on the tape;
* ``C_<NAME>`` -- integer columns: common ones (``C_CODE``, ``C_IN_H``,
  ``C_IN_W``, ``C_OUT_H``, ``C_OUT_W``, ``C_MODE_IN``, ``C_MODE_OUT``) and
  each op's parameters (``C_CONV_KH``, ``C_NONLIN_TAPE``, ``C_POOL_W_PTR``, ...);
* ``F_<OP>_<NAME>`` -- float columns (``F_CONV_WEIGHT_VAR``, ...).

The planner (``_plan``), the flip check (``_augment``) and the layer classes
use these names and never a literal code or column number.
"""

from sklearn_convkernel._core import abi as _read_abi

#: the raw table: ``{group: {name: value}}`` (see ``_core.abi``)
ABI = _read_abi()

globals().update({name: value for group in ABI.values() for name, value in group.items()})

#: every op code by name, and every name by op code
OP_CODES = dict(ABI["op"])
OP_NAMES = {code: name for name, code in OP_CODES.items()}
