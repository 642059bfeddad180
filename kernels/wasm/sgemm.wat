;; f32 matrix product C = A·B on packed operands, WebAssembly SIMD (f32x4).
;; Assembled by `deno task wasm` (tools/wasm.ts) into sgemm_wasm.ts, which kernels/wasm/loader.ts compiles.
;;
;; Operands live in an imported shared memory, so one instance per worker can run on the same data.
;; All addresses are byte offsets into that memory; the packing is done by kernels/wasm/matmul.ts:
;;
;;   A, packed in panels of 4 rows:  element (i, p) at a + ((i/4)·k + p)·16 + (i%4)·4
;;                                   (m rounded up to a multiple of 4, the extra rows zero)
;;   B, packed in panels of 8 columns: element (p, j) at b + ((j/8)·k + p)·32 + (j%8)·4
;;                                   (n rounded up to a multiple of 8, the extra columns zero)
;;   C, row-major with ldc elements per row, ldc a multiple of 8 ≥ n (full 8-column stores stay in the row).
;;
;; Blocking: the micro-kernel ($tile) keeps a 4×8 block of C in eight f32x4 accumulators and walks p, reading
;; one 8-wide row of the B panel (two loads) and splatting one A value per row (four load32_splat) per step.
;; Around it: k in blocks of KC = 256 (a 8 KiB slice of a B panel then stays in L1 while the row tiles reuse it),
;; rows in blocks of MC = 64 (their 64×256 A slice, 64 KiB, stays in L2 across all column panels).
;;
;; Exports: sgemm (one product, any row range) and sgemm_batch (a batch of products as row-tile items, the
;; unit a thread pool splits). Both compute C[i, j] entirely within the tile that holds row i.
;;
;; Determinism: every C element is c = (((0 + a0·b0) + a1·b1) + ...) + a(k-1)·b(k-1), each product rounded
;; to f32 and each sum rounded to f32, in this order whatever the row range: the k blocks run in order and
;; carry the partial sum through C (an exact f32 store/load), and a tile's lanes never mix. So splitting the
;; rows between threads, at any boundary, gives the same bits.

(module
  (import "env" "memory" (memory 1 65536 shared))

  ;; One 4×8 tile over kc steps of p. pa/pb: the tile's A/B panels at the block's first p; c: the tile's
  ;; top-left C element; ldc4: C's row pitch in bytes. Only tile rows r with lo ≤ r < hi are loaded/stored
  ;; (the rest belong to another thread's range or lie past m). load: continue the partial sums held in C
  ;; (every k block but the first); otherwise start from zero (locals start at zero).
  (func $tile (param $pa i32) (param $pb i32) (param $kc i32) (param $c i32) (param $ldc4 i32)
    (param $lo i32) (param $hi i32) (param $load i32)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local $b0 v128) (local $b1 v128) (local $a v128) (local $end i32) (local $end4 i32)

    (if (local.get $load)
      (then
        (if (i32.and (i32.le_s (local.get $lo) (i32.const 0)) (i32.gt_s (local.get $hi) (i32.const 0)))
          (then
            (local.set $c00 (v128.load offset=0 (local.get $c)))
            (local.set $c01 (v128.load offset=16 (local.get $c)))))
        (local.set $c (i32.add (local.get $c) (local.get $ldc4)))
        (if (i32.and (i32.le_s (local.get $lo) (i32.const 1)) (i32.gt_s (local.get $hi) (i32.const 1)))
          (then
            (local.set $c10 (v128.load offset=0 (local.get $c)))
            (local.set $c11 (v128.load offset=16 (local.get $c)))))
        (local.set $c (i32.add (local.get $c) (local.get $ldc4)))
        (if (i32.and (i32.le_s (local.get $lo) (i32.const 2)) (i32.gt_s (local.get $hi) (i32.const 2)))
          (then
            (local.set $c20 (v128.load offset=0 (local.get $c)))
            (local.set $c21 (v128.load offset=16 (local.get $c)))))
        (local.set $c (i32.add (local.get $c) (local.get $ldc4)))
        (if (i32.and (i32.le_s (local.get $lo) (i32.const 3)) (i32.gt_s (local.get $hi) (i32.const 3)))
          (then
            (local.set $c30 (v128.load offset=0 (local.get $c)))
            (local.set $c31 (v128.load offset=16 (local.get $c)))))
        (local.set $c (i32.sub (local.get $c) (i32.mul (local.get $ldc4) (i32.const 3))))))

    ;; B advances 32 bytes per p, A 16. Main loop: 4 steps of p per iteration (fewer loop-counter
    ;; instructions between the 64 multiply/adds); then the kc % 4 leftover steps one at a time.
    (local.set $end (i32.add (local.get $pb) (i32.shl (local.get $kc) (i32.const 5))))
    (local.set $end4 (i32.sub (local.get $end) (i32.shl (i32.and (local.get $kc) (i32.const 3)) (i32.const 5))))
    (block $done4
      (loop $steps4
        (br_if $done4 (i32.ge_u (local.get $pb) (local.get $end4)))
        ;; p + 0
        (local.set $b0 (v128.load offset=0 (local.get $pb)))
        (local.set $b1 (v128.load offset=16 (local.get $pb)))
        (local.set $a (v128.load32_splat offset=0 (local.get $pa)))
        (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=4 (local.get $pa)))
        (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=8 (local.get $pa)))
        (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c21 (f32x4.add (local.get $c21) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=12 (local.get $pa)))
        (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c31 (f32x4.add (local.get $c31) (f32x4.mul (local.get $a) (local.get $b1))))
        ;; p + 1
        (local.set $b0 (v128.load offset=32 (local.get $pb)))
        (local.set $b1 (v128.load offset=48 (local.get $pb)))
        (local.set $a (v128.load32_splat offset=16 (local.get $pa)))
        (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=20 (local.get $pa)))
        (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=24 (local.get $pa)))
        (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c21 (f32x4.add (local.get $c21) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=28 (local.get $pa)))
        (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c31 (f32x4.add (local.get $c31) (f32x4.mul (local.get $a) (local.get $b1))))
        ;; p + 2
        (local.set $b0 (v128.load offset=64 (local.get $pb)))
        (local.set $b1 (v128.load offset=80 (local.get $pb)))
        (local.set $a (v128.load32_splat offset=32 (local.get $pa)))
        (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=36 (local.get $pa)))
        (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=40 (local.get $pa)))
        (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c21 (f32x4.add (local.get $c21) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=44 (local.get $pa)))
        (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c31 (f32x4.add (local.get $c31) (f32x4.mul (local.get $a) (local.get $b1))))
        ;; p + 3
        (local.set $b0 (v128.load offset=96 (local.get $pb)))
        (local.set $b1 (v128.load offset=112 (local.get $pb)))
        (local.set $a (v128.load32_splat offset=48 (local.get $pa)))
        (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=52 (local.get $pa)))
        (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=56 (local.get $pa)))
        (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c21 (f32x4.add (local.get $c21) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=60 (local.get $pa)))
        (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c31 (f32x4.add (local.get $c31) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $pa (i32.add (local.get $pa) (i32.const 64)))
        (local.set $pb (i32.add (local.get $pb) (i32.const 128)))
        (br $steps4)))
    (block $done
      (loop $steps
        (br_if $done (i32.ge_u (local.get $pb) (local.get $end)))
        (local.set $b0 (v128.load offset=0 (local.get $pb)))
        (local.set $b1 (v128.load offset=16 (local.get $pb)))
        (local.set $a (v128.load32_splat offset=0 (local.get $pa)))
        (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=4 (local.get $pa)))
        (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=8 (local.get $pa)))
        (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c21 (f32x4.add (local.get $c21) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $a (v128.load32_splat offset=12 (local.get $pa)))
        (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $a) (local.get $b0))))
        (local.set $c31 (f32x4.add (local.get $c31) (f32x4.mul (local.get $a) (local.get $b1))))
        (local.set $pa (i32.add (local.get $pa) (i32.const 16)))
        (local.set $pb (i32.add (local.get $pb) (i32.const 32)))
        (br $steps)))

    (if (i32.and (i32.le_s (local.get $lo) (i32.const 0)) (i32.gt_s (local.get $hi) (i32.const 0)))
      (then
        (v128.store offset=0 (local.get $c) (local.get $c00))
        (v128.store offset=16 (local.get $c) (local.get $c01))))
    (local.set $c (i32.add (local.get $c) (local.get $ldc4)))
    (if (i32.and (i32.le_s (local.get $lo) (i32.const 1)) (i32.gt_s (local.get $hi) (i32.const 1)))
      (then
        (v128.store offset=0 (local.get $c) (local.get $c10))
        (v128.store offset=16 (local.get $c) (local.get $c11))))
    (local.set $c (i32.add (local.get $c) (local.get $ldc4)))
    (if (i32.and (i32.le_s (local.get $lo) (i32.const 2)) (i32.gt_s (local.get $hi) (i32.const 2)))
      (then
        (v128.store offset=0 (local.get $c) (local.get $c20))
        (v128.store offset=16 (local.get $c) (local.get $c21))))
    (local.set $c (i32.add (local.get $c) (local.get $ldc4)))
    (if (i32.and (i32.le_s (local.get $lo) (i32.const 3)) (i32.gt_s (local.get $hi) (i32.const 3)))
      (then
        (v128.store offset=0 (local.get $c) (local.get $c30))
        (v128.store offset=16 (local.get $c) (local.get $c31)))))

  ;; C[rowStart..rowEnd, 0..n) = A·B (the operands as described at the top; ldc in elements). Any row range
  ;; works; a tile that straddles a range boundary is computed whole and stores only its own rows, so ranges
  ;; split at multiples of 4 waste nothing.
  (func $sgemm (export "sgemm") (param $a i32) (param $b i32) (param $c i32) (param $m i32) (param $n i32)
    (param $k i32) (param $ldc i32) (param $rowStart i32) (param $rowEnd i32)
    (local $pc i32) (local $kc i32) (local $tile0 i32) (local $tile1 i32) (local $ic i32) (local $icEnd i32)
    (local $jr i32) (local $panels i32) (local $ir i32) (local $row i32)
    (if (i32.gt_s (local.get $rowEnd) (local.get $m)) (then (local.set $rowEnd (local.get $m))))
    (if (i32.lt_s (local.get $rowStart) (i32.const 0)) (then (local.set $rowStart (i32.const 0))))
    (if (i32.or (i32.ge_s (local.get $rowStart) (local.get $rowEnd)) (i32.le_s (local.get $n) (i32.const 0)))
      (then (return)))
    ;; k = 0: C = 0 (no tile runs).
    (if (i32.le_s (local.get $k) (i32.const 0))
      (then
        (local.set $row (local.get $rowStart))
        (loop $zero
          (memory.fill
            (i32.add (local.get $c) (i32.shl (i32.mul (local.get $row) (local.get $ldc)) (i32.const 2)))
            (i32.const 0)
            (i32.shl (local.get $n) (i32.const 2)))
          (local.set $row (i32.add (local.get $row) (i32.const 1)))
          (br_if $zero (i32.lt_s (local.get $row) (local.get $rowEnd))))
        (return)))
    (local.set $tile0 (i32.shr_u (local.get $rowStart) (i32.const 2)))
    (local.set $tile1 (i32.shr_u (i32.add (local.get $rowEnd) (i32.const 3)) (i32.const 2)))
    (local.set $panels (i32.shr_u (i32.add (local.get $n) (i32.const 7)) (i32.const 3)))
    (loop $kblocks
      (local.set $kc (i32.sub (local.get $k) (local.get $pc)))
      (if (i32.gt_s (local.get $kc) (i32.const 256)) (then (local.set $kc (i32.const 256))))
      (local.set $ic (local.get $tile0))
      (loop $rowblocks
        (local.set $icEnd (i32.add (local.get $ic) (i32.const 16))) ;; MC = 16 tiles = 64 rows
        (if (i32.gt_s (local.get $icEnd) (local.get $tile1)) (then (local.set $icEnd (local.get $tile1))))
        (local.set $jr (i32.const 0))
        (loop $panel
          (local.set $ir (local.get $ic))
          (loop $tiles
            (local.set $row (i32.shl (local.get $ir) (i32.const 2)))
            (call $tile
              (i32.add (local.get $a) (i32.shl (i32.add (i32.mul (local.get $ir) (local.get $k)) (local.get $pc))
                (i32.const 4)))
              (i32.add (local.get $b) (i32.shl (i32.add (i32.mul (local.get $jr) (local.get $k)) (local.get $pc))
                (i32.const 5)))
              (local.get $kc)
              (i32.add (local.get $c)
                (i32.shl (i32.add (i32.mul (local.get $row) (local.get $ldc)) (i32.shl (local.get $jr) (i32.const 3)))
                  (i32.const 2)))
              (i32.shl (local.get $ldc) (i32.const 2))
              (i32.sub (local.get $rowStart) (local.get $row))
              (i32.sub (local.get $rowEnd) (local.get $row))
              (local.get $pc))
            (local.set $ir (i32.add (local.get $ir) (i32.const 1)))
            (br_if $tiles (i32.lt_s (local.get $ir) (local.get $icEnd))))
          (local.set $jr (i32.add (local.get $jr) (i32.const 1)))
          (br_if $panel (i32.lt_s (local.get $jr) (local.get $panels))))
        (local.set $ic (local.get $icEnd))
        (br_if $rowblocks (i32.lt_s (local.get $ic) (local.get $tile1))))
      (local.set $pc (i32.add (local.get $pc) (local.get $kc)))
      (br_if $kblocks (i32.lt_s (local.get $pc) (local.get $k)))))

  ;; The work of a batch as items for a thread pool: item t is row tile t % tiles (rows 4·(t % tiles) ..
  ;; +4) of matrix t / tiles, tiles = ⌈m/4⌉; this computes items [itemStart, itemEnd). Matrix i's operands
  ;; sit at a + i·strideA, b + i·strideB, c + i·strideC (bytes; a stride 0 shares one operand). Items are
  ;; whole tiles, so any split of [0, count·tiles) into ranges computes each tile once.
  (func (export "sgemm_batch") (param $a i32) (param $b i32) (param $c i32) (param $strideA i32)
    (param $strideB i32) (param $strideC i32) (param $m i32) (param $n i32) (param $k i32) (param $ldc i32)
    (param $itemStart i32) (param $itemEnd i32)
    (local $tiles i32) (local $mat i32) (local $first i32) (local $last i32)
    (local.set $tiles (i32.shr_u (i32.add (local.get $m) (i32.const 3)) (i32.const 2)))
    (if (i32.eqz (local.get $tiles)) (then (return)))
    (block $done
      (loop $matrices
        (br_if $done (i32.ge_s (local.get $itemStart) (local.get $itemEnd)))
        (local.set $mat (i32.div_u (local.get $itemStart) (local.get $tiles)))
        ;; this matrix's tiles in the range: [first, last)
        (local.set $first (i32.sub (local.get $itemStart) (i32.mul (local.get $mat) (local.get $tiles))))
        (local.set $last (i32.sub (local.get $itemEnd) (i32.mul (local.get $mat) (local.get $tiles))))
        (if (i32.gt_s (local.get $last) (local.get $tiles)) (then (local.set $last (local.get $tiles))))
        (call $sgemm
          (i32.add (local.get $a) (i32.mul (local.get $mat) (local.get $strideA)))
          (i32.add (local.get $b) (i32.mul (local.get $mat) (local.get $strideB)))
          (i32.add (local.get $c) (i32.mul (local.get $mat) (local.get $strideC)))
          (local.get $m) (local.get $n) (local.get $k) (local.get $ldc)
          (i32.shl (local.get $first) (i32.const 2))
          (i32.shl (local.get $last) (i32.const 2)))
        (local.set $itemStart (i32.add (i32.mul (local.get $mat) (local.get $tiles)) (local.get $last)))
        (br $matrices)))))
