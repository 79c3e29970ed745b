"""Compile the Triton kernels for sm_90 (H100/H200) on a machine without a GPU.

    python scripts/compile_sm90.py

The interpreter (``TRITON_INTERPRET=1``) runs kernels as Python and misses compiler errors (a
non-constexpr global read inside a kernel cost a device run in session 5); this lowers each
kernel through ptxas with representative specialisations and prints its shared memory, registers
and spills (``ptxas -v``, indicative: the device's Triton may allocate differently), so a device
call is not spent on a compile error.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from custom_ops.block_summary import triton_kernels as summary  # noqa: E402
from custom_ops.coarse_selection import split_kernels as coarse  # noqa: E402
from custom_ops.entmax.triton_kernels import piece_width  # noqa: E402
from custom_ops.selection import triton_kernels as selection  # noqa: E402
from custom_ops.sparse_attention import list_kernels  # noqa: E402
from custom_ops.sparse_attention import triton_backward as fine_bwd  # noqa: E402
from custom_ops.sparse_attention import triton_kernels as fine  # noqa: E402
from custom_ops.sparse_decode import selection_kernels as decode_select  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
# The fine kernels' arguments as the benchmark launches them: contiguous head dims, query-major
# prior / flags / lists (unit strides), every other stride and length a multiple of 16.
FINE_UNIT_STRIDES = ("stride_qd", "stride_kd", "stride_vd", "stride_od", "stride_pt", "stride_at", "stride_lt")
FINE_DIVISIBLE = (
    "q_len", "kv_len", "causal_offset", "num_tiles", "stride_qb", "stride_qh", "stride_qt", "stride_kb",
    "stride_kh", "stride_kn", "stride_vb", "stride_vh", "stride_vn", "stride_pb", "stride_ph", "stride_pc",
    "stride_ab", "stride_ah", "stride_ac", "stride_lh", "stride_ob", "stride_oh", "stride_ot",
)  # fmt: skip


def compile_kernel(kernel, pointers: dict[str, str], constexprs: dict, floats=("scale",), unit=(), divisible=(),
                   **options):  # fmt: skip
    """``pointers``: argument → Triton pointer type (``*bf16``...), taken 16-byte aligned as the JIT
    sees torch's allocations; ``constexprs``: argument → value; every other argument an ``i32``
    (``fp32`` if named in ``floats``). The JIT's other specialisations, which change the code (unit
    strides fold away, aligned strides vectorise): ``unit`` names arguments equal to 1, ``divisible``
    integers divisible by 16."""
    names = kernel.arg_names
    unknown = (set(unit) | set(divisible)) - set(names)
    if unknown:  # a renamed kernel argument would otherwise lose its specialisation silently
        raise ValueError(f"{kernel.__name__}: no arguments {sorted(unknown)}")
    missing = [p.name for p in kernel.params if p.is_constexpr and p.name not in constexprs and p.name not in unit]
    if missing:  # a new constexpr would otherwise compile as a runtime i32
        raise ValueError(f"{kernel.__name__}: constexprs {missing} not given")
    signature, const, attrs = {}, {}, {}
    for i, name in enumerate(names):
        if name in pointers:
            signature[name] = pointers[name]
            if not pointers[name].startswith("tensordesc"):  # the JIT marks pointers, not descriptors
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in constexprs or name in unit:
            signature[name] = "constexpr"
            const[(i,)] = constexprs.get(name, 1)
        else:
            signature[name] = "fp32" if name in floats else "i32"
            if name in divisible:
                attrs[(i,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn=kernel, signature=signature, constexprs=const, attrs=attrs)
    return triton.compile(source, target=TARGET, options=options)


def registers_and_spills(compiled) -> str:
    """``ptxas -v`` on the kernel's PTX with the ptxas shipped with Triton that reads its PTX
    version (the Blackwell build is newer): registers and spill bytes per thread. Indicative: the
    device's Triton and ptxas may allocate differently (``CompiledKernel.n_regs`` / ``n_spills``
    after a launch there are the real numbers)."""
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "kernel.ptx"
        ptx.write_text(compiled.asm["ptx"])
        for ptxas in (bin_dir / "ptxas", bin_dir / "ptxas-blackwell"):
            if not ptxas.exists():
                continue
            cmd = [str(ptxas), "-v", "--gpu-name=sm_90a", str(ptx), "-o", str(Path(tmp) / "kernel.cubin")]
            run = subprocess.run(cmd, capture_output=True, text=True)
            regs = re.search(r"Used (\d+) registers", run.stdout + run.stderr)
            spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", run.stdout + run.stderr)
            # C7514 / C7515: ptxas runs the wgmma one at a time (an accumulator touched in flight)
            serial = ", wgmma SERIALISED" if re.search(r"C751[0-9]", run.stdout + run.stderr) else ""
            if run.returncode == 0 and regs and spills:
                return f"{regs.group(1)} registers, spills {spills.group(1)} / {spills.group(2)} B{serial}"
    return "registers n/a"


def report(name: str, compiled) -> None:
    size = f"shared {compiled.metadata.shared} B, ptx {len(compiled.asm['ptx']) // 1024} KiB"
    print(f"{name}: ok ({size}, {registers_and_spills(compiled)})")


def main() -> None:
    # (rows, pack, causal, warps, residual stored, row max on raw products: scale > 0, bias by list
    # slot, K / V through TMA descriptors)
    fwd_launches = ((32, 4, True, 4, True, True, False, False), (128, 1, True, 4, True, True, False, False),
                    (32, 4, False, 4, True, True, False, False), (32, 4, True, 4, False, True, False, False),
                    (32, 4, True, 4, True, False, False, False), (32, 4, True, 4, False, True, True, False),
                    (32, 4, True, 4, False, True, True, True))  # fmt: skip
    for rows, pack, causal, warps, residual, fold, from_rows, desc in fwd_launches:
        kv_desc = "tensordesc<bf16[1,64,128]>" if desc else "*bf16"
        fwd_ptrs = dict(Q="*bf16", K="*bf16", V="*bf16", K_DESC=kv_desc, V_DESC=kv_desc, PRIOR="*fp32",
                        ACTIVE="*i8", LIST="*i32", COUNT="*i32", OUT="*bf16", OUT_RES="*bf16", LSE="*fp32")  # fmt: skip
        consts = dict(BLOCK_M=rows, BLOCK_SIZE=64, HEAD_DIM=128, BLOCK_D=128, VALUE_DIM=128, BLOCK_DV=128,
                      CAUSAL=causal, HAS_PRIOR=True, IEEE=False, PACK=pack, FOLD_MAX=fold,
                      STORE_RESIDUAL=residual, FROM_ROWS=from_rows, USE_DESC=desc, HEAVY_FIRST=causal)  # fmt: skip
        # the bias by list slot has the prior's unit row stride and slot / list-row strides that
        # are multiples of 16, as the block-major prior's; the flags' strides (zeros) are not read
        k = compile_kernel(fine._sparse_attention_fwd, fwd_ptrs, consts, unit=FINE_UNIT_STRIDES,
                           divisible=FINE_DIVISIBLE, num_warps=warps, num_stages=2)  # fmt: skip
        report(f"fine forward rows={rows} pack={pack} causal={causal} warps={warps} "
               f"residual={residual} fold={fold} from_rows={from_rows} descriptors={desc}", k)  # fmt: skip
    bwd_ptrs = dict(Q="*bf16", K="*bf16", V="*bf16", PRIOR="*fp32", ACTIVE="*i8", LIST="*i32", COUNT="*i32",
                    TLIST="*i32", TCOUNT="*i32", DO="*bf16", OUT="*bf16", OUT_RES="*bf16", LSE="*fp32",
                    DELTA="*fp32", DQ="*bf16", DPRIOR="*fp32", DK="*bf16", DV="*bf16")  # fmt: skip
    for rows, pack, causal in ((16, 4, True), (32, 2, True), (64, 1, True), (16, 4, False)):
        consts = dict(BLOCK_M=rows, BLOCK_SIZE=64, HEAD_DIM=128, BLOCK_D=128, VALUE_DIM=128, BLOCK_DV=128,
                      CAUSAL=causal, HAS_PRIOR=True, IEEE=False, PACK=pack)  # fmt: skip
        kernels = (("dq/dprior", fine_bwd._dq_dprior), ("dk/dv", fine_bwd._dk_dv))
        for (name, kernel), (warps, stages) in zip(kernels, fine_bwd.BACKWARD_LAUNCH):
            k = compile_kernel(kernel, bwd_ptrs, consts, num_warps=warps, num_stages=stages)
            report(f"fine backward {name} rows={rows} pack={pack} causal={causal} stages={stages}", k)
    k = compile_kernel(fine_bwd._delta_rows, dict(DO="*bf16", OUT="*bf16", OUT_RES="*bf16", DELTA="*fp32"),
                       dict(ROWS=fine_bwd.DELTA_ROWS, VALUE_DIM=128, BLOCK_DV=128), num_warps=4)  # fmt: skip
    report("fine backward delta rows", k)
    list_ptrs = dict(ACTIVE="*i8", LIST="*i32", COUNT="*i32")
    for name, kernel in (("tile", list_kernels._tile_lists), ("block", list_kernels._block_lists)):
        k = compile_kernel(kernel, list_ptrs, dict(BLOCK_M=16, STEP=128), num_warps=4)
        report(f"fine {name} lists", k)
    k = compile_kernel(list_kernels._tile_lists_and_bias_from_rows,
                       dict(PROBS="*fp32", MEAN_LOG="*fp32", LIST="*i32", COUNT="*i32", BIAS="*fp32"),
                       dict(BLOCK_M=32, STEP=128, BLOCK_SIZE=64, CAUSAL=True, HAS_PRIOR=True, INTERPRETED=False),
                       ("inv_sigma",),
                       unit=("stride_pc",), divisible=("stride_pt",), num_warps=4)  # fmt: skip
    report("fine tile lists and bias from the rows", k)
    score_ptrs = dict(Q="*bf16", KB_HI="*bf16", KB_LO="*bf16", Z="*fp32")
    for bm, bn, warps, loop, stages in ((64, 64, 4, 0, 3), (128, 128, 8, 0, 3), (128, 64, 8, 1, 3),
                                        (64, 64, 4, 1, 3), (128, 32, 8, 1, 4), (128, 64, 8, 1, 4)):  # fmt: skip
        consts = dict(GROUP=4, BM=bm, BN=bn, HEAD_DIM=128, BLOCK_D=128, BLOCK_SIZE=64, CAUSAL=True, IEEE=False,
                      LOOP=loop)  # fmt: skip
        k = compile_kernel(coarse._coarse_scores, score_ptrs, consts, ("z_scale",), num_warps=warps, num_stages=stages)
        report(f"score GEMM {bm}x{bn} loop {loop} {stages} stages", k)
    ent_ptrs = dict(Z="*fp32", PROBS="*fp32", MEAN_LOG="*fp32")
    # (main, tail, float16 Newton steps): 16 in a 2048-block output row is 128K's first chunk; 256 + 128
    # the inference split; the inference launch's Newton steps on float16 pairs (N_HALF: all but the last)
    for width, tail, n_half in ((16, 0, 0), (128, 0, 0), (512, 0, 0), (1024, 0, 0), (2048, 0, 0), (4096, 0, 0),
                                (128, 0, 3), (512, 0, 3), (2048, 0, 3), (4096, 0, 4), (256, 128, 3), (512, 256, 3),
                                (1024, 512, 3)):  # fmt: skip
        rows, warps = coarse.entmax_config(triton.next_power_of_2(width + tail))
        consts = dict(GROUP=4, ROWS=rows, NB=width, NB_OUT=4096, SUB=tail or piece_width(width, rows, warps),
                      BLOCK_SIZE=64, CAUSAL=True, MODE=1, N_BISECT=0, N_NEWTON=5 if width >= 4096 else 4, TAIL=tail,
                      INTERPRETED=False, N_HALF=n_half)  # fmt: skip
        # the launch's specialisations: unit column strides, 16-divisible row strides
        k = compile_kernel(coarse._group_entmax, ent_ptrs, consts, ("am1", "d", "one_minus_alpha"),
                           unit=("stride_zc", "stride_pc"), divisible=("stride_zt", "stride_pt", "z_cols"),
                           num_warps=warps)  # fmt: skip
        report(f"group entmax width={width} tail={tail} float16 steps={n_half}", k)
    vjp_ptrs = dict(Z="*fp32", DZ_SPLIT="*bf16", GRAD="*fp32", DPRIOR="*fp32", PROBS="*fp32")
    for width in (16, 128, 512, 1024, 2048, 4096):
        rows, warps = coarse.entmax_config(width)
        consts = dict(GROUP=4, ROWS=rows, NB=width, NB_OUT=4096, SUB=piece_width(width, rows, warps), BLOCK_SIZE=64,
                      CAUSAL=True,
                      MODE=1, N_BISECT=0, N_NEWTON=4, HAS_GRAD_PROBS=True, HAS_GRAD_PRIOR=True, SPLIT=True)  # fmt: skip
        k = compile_kernel(coarse._group_entmax_vjp, vjp_ptrs, consts, ("am1", "d", "one_minus_alpha", "inv_sigma"),
                           num_warps=warps)  # fmt: skip
        report(f"group entmax VJP width={width}", k)
    bm, bk, warps = coarse.DQ_TILE
    consts = dict(GROUP=4, BM=bm, BK=bk, HEAD_DIM=128, BLOCK_D=128, BLOCK_SIZE=64, CAUSAL=True, SPLIT=True,
                  INTERPRETED=False)  # fmt: skip
    k = compile_kernel(coarse._coarse_dq, dict(DZ="*bf16", KB_HI="*bf16", KB_LO="*bf16", DQ="*bf16"), consts,
                       ("c_scale",), num_warps=warps, num_stages=2)  # fmt: skip
    report("coarse dq GEMM", k)
    bn, bm, warps, _ = coarse.DK_TILE
    for q_type in ("*bf16", "*fp16"):
        consts = dict(GROUP=4, BN=bn, BM=bm, HEAD_DIM=128, BLOCK_D=128, BLOCK_SIZE=64, CAUSAL=True, SPLIT=True,
                      INTERPRETED=False)  # fmt: skip
        k = compile_kernel(coarse._coarse_dk_bar, dict(DZ="*bf16", Q=q_type, DKB="*fp32"), consts, ("c_scale",),
                           num_warps=warps)  # fmt: skip
        report(f"coarse dk_bar GEMM q {q_type[1:]}", k)
    prior_ptrs = dict(PROBS="*fp32", MEAN_LOG="*fp32", PRIOR="*fp32", ACTIVE="*i8")
    consts = dict(TM=64, TN=64, BLOCK_SIZE=64, CAUSAL=True)
    report("block-major prior", compile_kernel(coarse._block_major_prior, prior_ptrs, consts, ("inv_sigma",)))
    for pool in (False, True):
        k = compile_kernel(summary._block_summary_fwd, dict(K="*bf16", U="*bf16", OUT="*fp32"),
                           dict(HEAD_DIM=128, BLOCK_SIZE=64, BLOCK_D=128, HAS_POOL=pool), ("logit_scale",),
                           num_warps=8)  # fmt: skip
        report(f"block summaries pool={pool}", k)
    k = compile_kernel(selection._log_prior_fwd, dict(P="*fp32", OUT="*fp32"), dict(ROWS=64, CHUNK=64),
                       ("inv_sigma",), num_warps=4)  # fmt: skip
    report("log prior", k)
    select_ptrs = dict(Z="*fp32", LENGTHS="*i64", NUM_NEW="*i64", ACTIVE="*i8", PRIOR="*fp32", LIST="*i32",
                       COUNT="*i32", POS="*i64")  # fmt: skip
    consts = dict(GROUP=4, GROUP_P2=4, NB=2048, SUB=512, BLOCK_SIZE=64, HAS_NUM_NEW=False, MODE=1,
                  N_BISECT=0, N_NEWTON=4)  # fmt: skip
    k = compile_kernel(decode_select._decode_select, select_ptrs, consts,
                       ("inv_sigma", "am1", "d", "one_minus_alpha"), num_warps=4)  # fmt: skip
    report("decode select nb=2048", k)
    k = compile_kernel(decode_select._merge_splits, dict(ACC="*fp32", M="*fp32", L="*fp32", OUT="*bf16"),
                       dict(GROUP=4, GROUP_P2=4, VALUE_DIM=128, BLOCK_DV=128), num_warps=4)  # fmt: skip
    report("decode merge splits", k)
    compile_gluon()


def compile_gluon() -> None:
    """The Gluon fine forwards (sm_90 only; custom_ops/sparse_attention/gluon_forward.py): bf16,
    causal, K / V descriptors of [64, 128] boxes, 32 rows × 4 heads (the benchmark's) and 128 rows
    of one head."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    from custom_ops.sparse_attention import gluon_forward

    desc = f"tensordesc<bf16[64, 128],{gl.NVMMASharedLayout.get_default_for([64, 128], gl.bfloat16)!r}>"
    pointers = dict(Q="*bf16", k_desc=desc, v_desc=desc, BIAS="*fp32", LIST="*i32", COUNT="*i32", OUT="*bf16",
                    LSE="*fp32")  # fmt: skip
    common = dict(BLOCK_SIZE=64, HEAD_DIM=128, CAUSAL=True, HEAVY_FIRST=True, STAGES=gluon_forward.STAGES)
    launches = (
        ("gluon", gluon_forward._sparse_attention_fwd_gluon, dict(OVERLAP_PV=False), dict(num_warps=8)),
        ("gluon overlap_pv", gluon_forward._sparse_attention_fwd_gluon, dict(OVERLAP_PV=True), dict(num_warps=8)),
    )
    ws = gluon_forward._sparse_attention_fwd_ws
    ws_options = dict(num_warps=4, maxnreg=168)
    launches += (
        ("gluon_ws", ws, dict(CONSUMER_REGS=232, PINGPONG=False, PAIRS=False), ws_options),
        ("gluon_ws pingpong", ws, dict(CONSUMER_REGS=232, PINGPONG=True, PAIRS=False), ws_options),
        ("gluon_ws pairs", ws, dict(CONSUMER_REGS=232, PINGPONG=True, PAIRS=True, STAGES=gluon_forward.PAIR_STAGES),
         ws_options),
    )  # fmt: skip
    for (name, kernel, consts, options), (rows, pack) in itertools.product(launches, ((32, 4), (128, 1))):
        consts = {**common, **consts, "BLOCK_M": rows, "PACK": pack}
        name = f"{name} rows={rows} pack={pack}"
        signature = {n: pointers.get(n, "constexpr" if n in consts else "fp32" if n == "scale" else "i32")
                     for n in kernel.arg_names}  # fmt: skip
        k = triton.compile(GluonASTSource(kernel, signature, consts), target=TARGET, options=options)
        report(f"fine forward {name}", k)


if __name__ == "__main__":
    main()
