"""FCA's reference lookup, sixteen pixels at a time (step 3, a CPU kernel's inner step).

FCA compares every value of every neighbourhood with the reference value of
its rank: ``|value - reference[rank]|`` (see :mod:`skanomclust.nn.fca_cpu`).
Compiled as a plain loop, the lookup ``reference[rank]`` is one scalar load
per value, and it was over half of the kernel's time: LLVM does not turn a
lookup into a short table into vector code. The reference has at most 64
values for the default 7 x 7 neighbourhood (49), so on processors with
AVX-512 the table fits in four vector registers, and two two-register
permutes (``vpermi2ps``) and a blend look up sixteen values at once, about
three times faster than the scalar loads here.

:func:`add_rank_gaps16` is a numba intrinsic that emits these instructions
when numba compiles for a processor with AVX-512 (and float32 values), and
otherwise sixteen scalar lookups, so the same kernel compiles everywhere. Both
compute every output value with the same float operations in the same order:
the result is bitwise the same.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import config
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic

__all__ = ["LANES", "TABLE_SIZE", "add_rank_gaps16", "permute_lookup_available"]

# Pixels per call, and the padded reference table of the permute lookup.
LANES = 16
TABLE_SIZE = 64

_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
_PERMUTE = "llvm.x86.avx512.vpermi2var.ps.512"


def permute_lookup_available() -> bool:
    """Whether numba compiles for a processor with AVX-512 (what the permutes need).

    The same features as numba's own code generation: its ``NUMBA_CPU_FEATURES``
    setting when given, else the host's (without AVX when numba's
    ``NUMBA_ENABLE_AVX`` is off).
    """
    features = config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
    return "+avx512f" in str(features).split(",")


def _address(builder, base, index, itemsize):
    """Pointer to element ``index`` of an array's data (opaque-pointer safe)."""
    if index.type.width < 64:  # LLVM has no sign extension to the same width
        index = builder.sext(index, _I64)
    offset = builder.mul(index, ir.Constant(_I64, itemsize))
    return builder.inttoptr(builder.add(builder.ptrtoint(base, _I64), offset), ir.PointerType())


def _declare(module, name, return_type, argument_types):
    function = module.globals.get(name)
    if function is None:
        function = ir.Function(module, ir.FunctionType(return_type, argument_types), name)
    return function


def _permute_lanes(builder, ranks, table, float_type):
    """``table[ranks]`` of sixteen lanes with two permutes and a blend."""
    vector, indices = ir.VectorType(float_type, LANES), ir.VectorType(_I32, LANES)
    index = builder.zext(builder.load(ranks, typ=ir.VectorType(_I8, LANES), align=1), indices)
    quarters = [
        builder.load(_address(builder, table, ir.Constant(_I64, start), 4), typ=vector, align=4)
        for start in range(0, TABLE_SIZE, LANES)
    ]
    permute = _declare(builder.module, _PERMUTE, vector, [vector, indices, vector])
    # vpermi2ps reads the low five bits of each index (32 entries in two
    # registers); bit five picks which pair of registers holds the value.
    low = builder.call(permute, [quarters[0], index, quarters[1]])
    high = builder.call(permute, [quarters[2], index, quarters[3]])
    upper = builder.icmp_unsigned(
        "!=",
        builder.and_(index, ir.Constant(indices, [32] * LANES)),
        ir.Constant(indices, [0] * LANES),
    )
    return builder.select(upper, high, low)


def _scalar_lanes(builder, ranks, table, float_type, itemsize, rank_type):
    """The same lookup, lane by lane, into one vector.

    Only the lookup is per lane: the caller subtracts it from the values as
    one vector. On a Zen 3 core (no AVX-512) that made the kernel alone 0-8%
    faster than subtracting lane by lane (the same subtraction per lane).
    """
    vector = ir.VectorType(float_type, LANES)
    looked_up = ir.Constant(vector, ir.Undefined)
    for lane in range(LANES):
        at = ir.Constant(_I64, lane)
        rank = builder.load(_address(builder, ranks, at, rank_type.width // 8), typ=rank_type)
        reference = builder.load(
            _address(builder, table, builder.zext(rank, _I64), itemsize), typ=float_type
        )
        looked_up = builder.insert_element(looked_up, reference, at)
    return looked_up


@intrinsic
def add_rank_gaps16(typingctx, out, o, values, q, ranks, table):
    """``out[o + i] += |values[q + i] - table[ranks[q + i]]|`` for ``i`` in 0..15.

    A numba intrinsic: callable from compiled (``njit``) code only, where it
    becomes inline vector code.

    Parameters
    ----------
    out : 1-d float32 or float64 array
        Accumulated differences; ``out[o : o + 16]`` is updated in place.
    o : int
        First element of ``out``.
    values : 1-d array of the dtype of ``out``
        Values; ``values[q : q + 16]`` are read.
    q : int
        First element of ``values`` and ``ranks``.
    ranks : 1-d unsigned integer array
        Each value's rank, an index into ``table``.
    table : 1-d array of the dtype of ``out``
        The reference, padded to :data:`TABLE_SIZE` values for the permute
        lookup (float32 values, uint8 ranks, every rank below
        :data:`TABLE_SIZE`); other dtypes take the lane-by-lane lookup.

    Notes
    -----
    Nothing is checked: every index must be in bounds.
    """
    arrays = (out, values, ranks, table)
    if not all(isinstance(a, types.Array) for a in arrays):
        return None
    if not (out.dtype == values.dtype == table.dtype and isinstance(out.dtype, types.Float)):
        return None
    if not (isinstance(ranks.dtype, types.Integer) and not ranks.dtype.signed):
        return None
    signature = types.void(out, o, values, q, ranks, table)

    def codegen(context, builder, signature, args):
        def data(k, index=None, itemsize=None):
            base = context.make_array(signature.args[k])(context, builder, args[k]).data
            return base if index is None else _address(builder, base, index, itemsize)

        float_type = context.get_value_type(out.dtype)
        itemsize = out.dtype.bitwidth // 8
        ranks_at = data(4, args[3], ranks.dtype.bitwidth // 8)
        vector = ir.VectorType(float_type, LANES)
        if permute_lookup_available() and out.dtype == types.float32 and ranks.dtype.bitwidth == 8:
            looked_up = _permute_lanes(builder, ranks_at, data(5), float_type)
        else:
            rank_type = ir.IntType(ranks.dtype.bitwidth)
            looked_up = _scalar_lanes(builder, ranks_at, data(5), float_type, itemsize, rank_type)
        values = builder.load(data(2, args[3], itemsize), typ=vector, align=itemsize)
        gaps = builder.fsub(values, looked_up)
        fabs = _declare(
            builder.module,
            f"llvm.fabs.v{LANES}{'f32' if itemsize == 4 else 'f64'}",
            vector,
            [vector],
        )
        target = data(0, args[1], itemsize)
        before = builder.load(target, typ=vector, align=itemsize)
        total = builder.fadd(before, builder.call(fabs, [gaps]))
        builder.store(total, target, align=itemsize)
        return context.get_dummy_value()

    return signature, codegen
