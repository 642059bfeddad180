;; Fused quantize-dequantize kernels for the CPU backend (formats/host_quant.ts drives them).
;;
;; They give the same bits as the reference word kernels (element.ts, mx.ts, nvfp4.ts, int.ts), which work
;; on integer bits; here the same steps are IEEE f32 operations, four lanes at a time. WebAssembly's f32
;; arithmetic is correctly rounded to nearest-even with subnormals (no flush to zero), so every multiply
;; and reciprocal below is the reference's f32MulBits / f32RecipBits. What WebAssembly leaves open is the
;; bit pattern of a NaN result: every NaN that can reach an output is replaced by the canonical 0x7fc00000.
;; Rounding is `nearest` (f32x4.nearest rounds ties to even) or `stochastic`: with s = |v| / quantum (exact),
;; round up iff the element's Philox word is below floor(frac(s) · 2^32), exactly the reference's threshold
;; rest · 2^(32 - shift) (frac(s) · 2^32 is an exact f32 integer below 2^32). `nearest-away` uses the word
;; kernels. The exported kernels take `$rd`: 0 for nearest, else the byte distance from a value to its
;; random word (filled by `philox`).
;;
;; Rounding |v| to an element format with M mantissa bits and smallest normal exponent emin: the quantum
;; at |v| is 2^(max(floor(log2|v|), emin) - M), so |v| / quantum is exact (a power-of-two scaling), its
;; nearest integer is the rounded significand, and times the quantum is exact again. That needs both the
;; quantum and its inverse to be normal f32 powers of two: M >= 1 and emin - M >= -126 (checked by the
;; caller); the f32 exponent field is clamped to 254 so that Inf maps to a finite quantum and overflows.
;;
;; Addresses and lengths are in bytes / elements as named; every buffer is 16-byte aligned.
(module
  (memory (export "memory") 4)

  ;; The rounded significands of four non-negative lanes s (see the header): nearest, or stochastic with
  ;; the lanes' random words when $sr is not 0.
  (func $round_grid (param $s v128) (param $rand v128) (param $sr i32) (result v128)
    (local $fl v128)
    (if (result v128) (local.get $sr)
      (then
        (local.set $fl (f32x4.floor (local.get $s)))
        (f32x4.sub (local.get $fl)
          (f32x4.convert_i32x4_s
            (i32x4.lt_u (local.get $rand)
              (i32x4.trunc_sat_f32x4_u
                (f32x4.mul (f32x4.sub (local.get $s) (local.get $fl)) (v128.const f32x4 4294967296 4294967296 4294967296 4294967296)))))))
      (else (f32x4.nearest (local.get $s)))))

  ;; Element rounding of four lanes. rand/sr: as $round_grid. lo: emin + 127, mb: M, maxv: f32 bits of the
  ;; largest finite value, ovf: what overflow becomes before the sign is applied (max, Inf, or NaN), all splat.
  (func $elem (param $v v128) (param $rand v128) (param $sr i32)
    (param $lo v128) (param $mb v128) (param $maxv v128) (param $ovf v128) (result v128)
    (local $a v128) (local $qb v128) (local $r v128)
    (local.set $a (f32x4.abs (local.get $v)))
    ;; biased exponent of the quantum: max(E, emin + 127) - M, with E clamped to 254
    (local.set $qb
      (i32x4.sub
        (i32x4.max_s
          (i32x4.min_s (i32x4.shr_u (local.get $a) (i32.const 23)) (v128.const i32x4 254 254 254 254))
          (local.get $lo))
        (local.get $mb)))
    (local.set $r
      (f32x4.mul
        (call $round_grid
          (f32x4.mul (local.get $a)
            (i32x4.shl (i32x4.sub (v128.const i32x4 254 254 254 254) (local.get $qb)) (i32.const 23)))
          (local.get $rand) (local.get $sr))
        (i32x4.shl (local.get $qb) (i32.const 23))))
    (local.set $r (v128.bitselect (local.get $ovf) (local.get $r) (f32x4.gt (local.get $r) (local.get $maxv))))
    (local.set $r
      (v128.or (local.get $r)
        (v128.and (local.get $v) (v128.const i32x4 0x80000000 0x80000000 0x80000000 0x80000000))))
    (call $canonical (local.get $r)))

  ;; NaN lanes become 0x7fc00000.
  (func $canonical (param $r v128) (result v128)
    (v128.bitselect
      (v128.const i32x4 0x7fc00000 0x7fc00000 0x7fc00000 0x7fc00000)
      (local.get $r)
      (f32x4.ne (local.get $r) (local.get $r))))

  ;; Largest unsigned lane.
  (func $hmax (param $v v128) (result i32)
    (local.set $v
      (i32x4.max_u (local.get $v)
        (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v))))
    (local.set $v
      (i32x4.max_u (local.get $v)
        (i8x16.shuffle 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 (local.get $v) (local.get $v))))
    (i32x4.extract_lane 0 (local.get $v)))

  ;; Largest magnitude bits (bits & 0x7fffffff) of `vectors` four-lane vectors at $in.
  (func $amax (export "amax") (param $in i32) (param $vectors i32) (result i32)
    (local $m v128) (local $end i32)
    (local.set $end (i32.add (local.get $in) (i32.shl (local.get $vectors) (i32.const 4))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $in) (local.get $end)))
        (local.set $m
          (i32x4.max_u (local.get $m)
            (v128.and (v128.load (local.get $in))
              (v128.const i32x4 0x7fffffff 0x7fffffff 0x7fffffff 0x7fffffff))))
        (local.set $in (i32.add (local.get $in) (i32.const 16)))
        (br $next)))
    (call $hmax (local.get $m)))

  ;; f32 bits of 2^e for e in [-127, 127] (2^-127 is subnormal), as scales.ts pow2Bits.
  (func $pow2 (param $e i32) (result i32)
    (if (result i32) (i32.eq (local.get $e) (i32.const -127))
      (then (i32.const 0x00400000))
      (else (i32.shl (i32.add (local.get $e) (i32.const 127)) (i32.const 23)))))

  ;; Stores `vectors` copies of `value` from $out on.
  (func $fill (param $out i32) (param $vectors i32) (param $value v128)
    (local $end i32)
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $vectors) (i32.const 4))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (v128.store (local.get $out) (local.get $value))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; Element formats without a scale (float.ts): `vectors` four-lane vectors rounded to the format.
  (func (export "element") (param $in i32) (param $out i32) (param $vectors i32)
    (param $mbits i32) (param $emin i32) (param $maxBits i32) (param $ovfBits i32) (param $rd i32)
    (local $lo v128) (local $mb v128) (local $maxv v128) (local $ovf v128) (local $end i32)
    (local.set $lo (i32x4.splat (i32.add (local.get $emin) (i32.const 127))))
    (local.set $mb (i32x4.splat (local.get $mbits)))
    (local.set $maxv (i32x4.splat (local.get $maxBits)))
    (local.set $ovf (i32x4.splat (local.get $ovfBits)))
    (local.set $end (i32.add (local.get $in) (i32.shl (local.get $vectors) (i32.const 4))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $in) (local.get $end)))
        (v128.store (local.get $out)
          (call $elem (v128.load (local.get $in)) (v128.load (i32.add (local.get $in) (local.get $rd))) (local.get $rd)
            (local.get $lo) (local.get $mb) (local.get $maxv) (local.get $ovf)))
        (local.set $in (i32.add (local.get $in) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; Per-tensor scaled element formats (tensor_scale.ts): round(x · s) · inv, both products IEEE f32 products
  ;; (WebAssembly's f32x4.mul rounds to nearest, keeps subnormals), NaN lanes canonical.
  (func (export "scaled_element") (param $in i32) (param $out i32) (param $vectors i32)
    (param $mbits i32) (param $emin i32) (param $maxBits i32) (param $ovfBits i32) (param $rd i32)
    (param $s f32) (param $inv f32)
    (local $lo v128) (local $mb v128) (local $maxv v128) (local $ovf v128) (local $sv v128) (local $iv v128)
    (local $end i32)
    (local.set $lo (i32x4.splat (i32.add (local.get $emin) (i32.const 127))))
    (local.set $mb (i32x4.splat (local.get $mbits)))
    (local.set $maxv (i32x4.splat (local.get $maxBits)))
    (local.set $ovf (i32x4.splat (local.get $ovfBits)))
    (local.set $sv (f32x4.splat (local.get $s)))
    (local.set $iv (f32x4.splat (local.get $inv)))
    (local.set $end (i32.add (local.get $in) (i32.shl (local.get $vectors) (i32.const 4))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $in) (local.get $end)))
        (v128.store (local.get $out)
          (call $canonical
            (f32x4.mul
              (call $elem (f32x4.mul (v128.load (local.get $in)) (local.get $sv))
                (v128.load (i32.add (local.get $in) (local.get $rd))) (local.get $rd)
                (local.get $lo) (local.get $mb) (local.get $maxv) (local.get $ovf))
              (local.get $iv))))
        (local.set $in (i32.add (local.get $in) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))

  ;; "hadamard" for blocks of 8: the same stages on one block held in 2 vectors, in one pass over the data.
  (func $hadamard8 (param $in i32) (param $out i32) (param $masks i32) (param $n i32) (param $scale f32)
    (param $mode i32)
    (local $at i32) (local $end i32) (local $a v128) (local $sv v128)
    (local $v0 v128) (local $v1 v128)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (local.set $sv (f32x4.splat (local.get $scale)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $v0 (v128.load offset=0 (i32.add (local.get $in) (local.get $at))))
        (local.set $v1 (v128.load offset=16 (i32.add (local.get $in) (local.get $at))))
        (if (i32.eq (local.get $mode) (i32.const 1))
          (then
            (local.set $v0 (v128.xor (local.get $v0) (v128.load offset=0 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v1 (v128.xor (local.get $v1) (v128.load offset=16 (i32.add (local.get $masks) (local.get $at)))))))
        (local.set $v0
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v0) (local.get $v0))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v0) (local.get $v0))
              (v128.const f32x4 1 -1 1 -1))))
        (local.set $v0
          (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v0) (local.get $v0))
            (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v0) (local.get $v0))
              (v128.const f32x4 1 1 -1 -1))))
        (local.set $v1
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v1) (local.get $v1))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v1) (local.get $v1))
              (v128.const f32x4 1 -1 1 -1))))
        (local.set $v1
          (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v1) (local.get $v1))
            (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v1) (local.get $v1))
              (v128.const f32x4 1 1 -1 -1))))
        ;; h = 4
        (local.set $a (local.get $v0))
        (local.set $v0 (f32x4.add (local.get $a) (local.get $v1)))
        (local.set $v1 (f32x4.sub (local.get $a) (local.get $v1)))
        (local.set $v0 (call $canonical (f32x4.mul (local.get $v0) (local.get $sv))))
        (local.set $v1 (call $canonical (f32x4.mul (local.get $v1) (local.get $sv))))
        (if (i32.eq (local.get $mode) (i32.const 2))
          (then
            (local.set $v0 (v128.xor (local.get $v0) (v128.load offset=0 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v1 (v128.xor (local.get $v1) (v128.load offset=16 (i32.add (local.get $masks) (local.get $at)))))))
        (v128.store offset=0 (i32.add (local.get $out) (local.get $at)) (local.get $v0))
        (v128.store offset=16 (i32.add (local.get $out) (local.get $at)) (local.get $v1))
        (local.set $at (i32.add (local.get $at) (i32.const 32)))
        (br $next))))

  ;; "hadamard" for blocks of 16: the same stages on one block held in 4 vectors, in one pass over the data.
  (func $hadamard16 (param $in i32) (param $out i32) (param $masks i32) (param $n i32) (param $scale f32)
    (param $mode i32)
    (local $at i32) (local $end i32) (local $a v128) (local $sv v128)
    (local $v0 v128) (local $v1 v128) (local $v2 v128) (local $v3 v128)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (local.set $sv (f32x4.splat (local.get $scale)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $v0 (v128.load offset=0 (i32.add (local.get $in) (local.get $at))))
        (local.set $v1 (v128.load offset=16 (i32.add (local.get $in) (local.get $at))))
        (local.set $v2 (v128.load offset=32 (i32.add (local.get $in) (local.get $at))))
        (local.set $v3 (v128.load offset=48 (i32.add (local.get $in) (local.get $at))))
        (if (i32.eq (local.get $mode) (i32.const 1))
          (then
            (local.set $v0 (v128.xor (local.get $v0) (v128.load offset=0 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v1 (v128.xor (local.get $v1) (v128.load offset=16 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v2 (v128.xor (local.get $v2) (v128.load offset=32 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v3 (v128.xor (local.get $v3) (v128.load offset=48 (i32.add (local.get $masks) (local.get $at)))))))
        (local.set $v0
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v0) (local.get $v0))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v0) (local.get $v0))
              (v128.const f32x4 1 -1 1 -1))))
        (local.set $v0
          (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v0) (local.get $v0))
            (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v0) (local.get $v0))
              (v128.const f32x4 1 1 -1 -1))))
        (local.set $v1
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v1) (local.get $v1))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v1) (local.get $v1))
              (v128.const f32x4 1 -1 1 -1))))
        (local.set $v1
          (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v1) (local.get $v1))
            (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v1) (local.get $v1))
              (v128.const f32x4 1 1 -1 -1))))
        (local.set $v2
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v2) (local.get $v2))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v2) (local.get $v2))
              (v128.const f32x4 1 -1 1 -1))))
        (local.set $v2
          (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v2) (local.get $v2))
            (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v2) (local.get $v2))
              (v128.const f32x4 1 1 -1 -1))))
        (local.set $v3
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v3) (local.get $v3))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v3) (local.get $v3))
              (v128.const f32x4 1 -1 1 -1))))
        (local.set $v3
          (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v3) (local.get $v3))
            (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v3) (local.get $v3))
              (v128.const f32x4 1 1 -1 -1))))
        ;; h = 4
        (local.set $a (local.get $v0))
        (local.set $v0 (f32x4.add (local.get $a) (local.get $v1)))
        (local.set $v1 (f32x4.sub (local.get $a) (local.get $v1)))
        (local.set $a (local.get $v2))
        (local.set $v2 (f32x4.add (local.get $a) (local.get $v3)))
        (local.set $v3 (f32x4.sub (local.get $a) (local.get $v3)))
        ;; h = 8
        (local.set $a (local.get $v0))
        (local.set $v0 (f32x4.add (local.get $a) (local.get $v2)))
        (local.set $v2 (f32x4.sub (local.get $a) (local.get $v2)))
        (local.set $a (local.get $v1))
        (local.set $v1 (f32x4.add (local.get $a) (local.get $v3)))
        (local.set $v3 (f32x4.sub (local.get $a) (local.get $v3)))
        (local.set $v0 (call $canonical (f32x4.mul (local.get $v0) (local.get $sv))))
        (local.set $v1 (call $canonical (f32x4.mul (local.get $v1) (local.get $sv))))
        (local.set $v2 (call $canonical (f32x4.mul (local.get $v2) (local.get $sv))))
        (local.set $v3 (call $canonical (f32x4.mul (local.get $v3) (local.get $sv))))
        (if (i32.eq (local.get $mode) (i32.const 2))
          (then
            (local.set $v0 (v128.xor (local.get $v0) (v128.load offset=0 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v1 (v128.xor (local.get $v1) (v128.load offset=16 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v2 (v128.xor (local.get $v2) (v128.load offset=32 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v3 (v128.xor (local.get $v3) (v128.load offset=48 (i32.add (local.get $masks) (local.get $at)))))))
        (v128.store offset=0 (i32.add (local.get $out) (local.get $at)) (local.get $v0))
        (v128.store offset=16 (i32.add (local.get $out) (local.get $at)) (local.get $v1))
        (v128.store offset=32 (i32.add (local.get $out) (local.get $at)) (local.get $v2))
        (v128.store offset=48 (i32.add (local.get $out) (local.get $at)) (local.get $v3))
        (local.set $at (i32.add (local.get $at) (i32.const 64)))
        (br $next))))

  ;; "hadamard" for blocks of 32: the same stages on one block held in 8 vectors, in one pass over the data.
  (func $hadamard32 (param $in i32) (param $out i32) (param $masks i32) (param $n i32) (param $scale f32)
    (param $mode i32)
    (local $at i32) (local $end i32) (local $a v128) (local $sv v128)
    (local $v0 v128) (local $v1 v128) (local $v2 v128) (local $v3 v128) (local $v4 v128) (local $v5 v128) (local $v6 v128) (local $v7 v128)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (local.set $sv (f32x4.splat (local.get $scale)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $v0 (v128.load offset=0 (i32.add (local.get $in) (local.get $at))))
        (local.set $v1 (v128.load offset=16 (i32.add (local.get $in) (local.get $at))))
        (local.set $v2 (v128.load offset=32 (i32.add (local.get $in) (local.get $at))))
        (local.set $v3 (v128.load offset=48 (i32.add (local.get $in) (local.get $at))))
        (local.set $v4 (v128.load offset=64 (i32.add (local.get $in) (local.get $at))))
        (local.set $v5 (v128.load offset=80 (i32.add (local.get $in) (local.get $at))))
        (local.set $v6 (v128.load offset=96 (i32.add (local.get $in) (local.get $at))))
        (local.set $v7 (v128.load offset=112 (i32.add (local.get $in) (local.get $at))))
        (if (i32.eq (local.get $mode) (i32.const 1))
          (then
            (local.set $v0 (v128.xor (local.get $v0) (v128.load offset=0 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v1 (v128.xor (local.get $v1) (v128.load offset=16 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v2 (v128.xor (local.get $v2) (v128.load offset=32 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v3 (v128.xor (local.get $v3) (v128.load offset=48 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v4 (v128.xor (local.get $v4) (v128.load offset=64 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v5 (v128.xor (local.get $v5) (v128.load offset=80 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v6 (v128.xor (local.get $v6) (v128.load offset=96 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v7 (v128.xor (local.get $v7) (v128.load offset=112 (i32.add (local.get $masks) (local.get $at)))))))
        (local.set $v0
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v0) (local.get $v0))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v0) (local.get $v0))
              (v128.const f32x4 1 -1 1 -1))))
        (local.set $v0
          (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v0) (local.get $v0))
            (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v0) (local.get $v0))
              (v128.const f32x4 1 1 -1 -1))))
        (local.set $v1
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v1) (local.get $v1))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v1) (local.get $v1))
              (v128.const f32x4 1 -1 1 -1))))
        (local.set $v1
          (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v1) (local.get $v1))
            (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v1) (local.get $v1))
              (v128.const f32x4 1 1 -1 -1))))
        (local.set $v2
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v2) (local.get $v2))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v2) (local.get $v2))
              (v128.const f32x4 1 -1 1 -1))))
        (local.set $v2
          (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v2) (local.get $v2))
            (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v2) (local.get $v2))
              (v128.const f32x4 1 1 -1 -1))))
        (local.set $v3
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v3) (local.get $v3))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v3) (local.get $v3))
              (v128.const f32x4 1 -1 1 -1))))
        (local.set $v3
          (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v3) (local.get $v3))
            (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v3) (local.get $v3))
              (v128.const f32x4 1 1 -1 -1))))
        (local.set $v4
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v4) (local.get $v4))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v4) (local.get $v4))
              (v128.const f32x4 1 -1 1 -1))))
        (local.set $v4
          (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v4) (local.get $v4))
            (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v4) (local.get $v4))
              (v128.const f32x4 1 1 -1 -1))))
        (local.set $v5
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v5) (local.get $v5))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v5) (local.get $v5))
              (v128.const f32x4 1 -1 1 -1))))
        (local.set $v5
          (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v5) (local.get $v5))
            (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v5) (local.get $v5))
              (v128.const f32x4 1 1 -1 -1))))
        (local.set $v6
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v6) (local.get $v6))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v6) (local.get $v6))
              (v128.const f32x4 1 -1 1 -1))))
        (local.set $v6
          (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v6) (local.get $v6))
            (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v6) (local.get $v6))
              (v128.const f32x4 1 1 -1 -1))))
        (local.set $v7
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v7) (local.get $v7))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v7) (local.get $v7))
              (v128.const f32x4 1 -1 1 -1))))
        (local.set $v7
          (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v7) (local.get $v7))
            (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v7) (local.get $v7))
              (v128.const f32x4 1 1 -1 -1))))
        ;; h = 4
        (local.set $a (local.get $v0))
        (local.set $v0 (f32x4.add (local.get $a) (local.get $v1)))
        (local.set $v1 (f32x4.sub (local.get $a) (local.get $v1)))
        (local.set $a (local.get $v2))
        (local.set $v2 (f32x4.add (local.get $a) (local.get $v3)))
        (local.set $v3 (f32x4.sub (local.get $a) (local.get $v3)))
        (local.set $a (local.get $v4))
        (local.set $v4 (f32x4.add (local.get $a) (local.get $v5)))
        (local.set $v5 (f32x4.sub (local.get $a) (local.get $v5)))
        (local.set $a (local.get $v6))
        (local.set $v6 (f32x4.add (local.get $a) (local.get $v7)))
        (local.set $v7 (f32x4.sub (local.get $a) (local.get $v7)))
        ;; h = 8
        (local.set $a (local.get $v0))
        (local.set $v0 (f32x4.add (local.get $a) (local.get $v2)))
        (local.set $v2 (f32x4.sub (local.get $a) (local.get $v2)))
        (local.set $a (local.get $v1))
        (local.set $v1 (f32x4.add (local.get $a) (local.get $v3)))
        (local.set $v3 (f32x4.sub (local.get $a) (local.get $v3)))
        (local.set $a (local.get $v4))
        (local.set $v4 (f32x4.add (local.get $a) (local.get $v6)))
        (local.set $v6 (f32x4.sub (local.get $a) (local.get $v6)))
        (local.set $a (local.get $v5))
        (local.set $v5 (f32x4.add (local.get $a) (local.get $v7)))
        (local.set $v7 (f32x4.sub (local.get $a) (local.get $v7)))
        ;; h = 16
        (local.set $a (local.get $v0))
        (local.set $v0 (f32x4.add (local.get $a) (local.get $v4)))
        (local.set $v4 (f32x4.sub (local.get $a) (local.get $v4)))
        (local.set $a (local.get $v1))
        (local.set $v1 (f32x4.add (local.get $a) (local.get $v5)))
        (local.set $v5 (f32x4.sub (local.get $a) (local.get $v5)))
        (local.set $a (local.get $v2))
        (local.set $v2 (f32x4.add (local.get $a) (local.get $v6)))
        (local.set $v6 (f32x4.sub (local.get $a) (local.get $v6)))
        (local.set $a (local.get $v3))
        (local.set $v3 (f32x4.add (local.get $a) (local.get $v7)))
        (local.set $v7 (f32x4.sub (local.get $a) (local.get $v7)))
        (local.set $v0 (call $canonical (f32x4.mul (local.get $v0) (local.get $sv))))
        (local.set $v1 (call $canonical (f32x4.mul (local.get $v1) (local.get $sv))))
        (local.set $v2 (call $canonical (f32x4.mul (local.get $v2) (local.get $sv))))
        (local.set $v3 (call $canonical (f32x4.mul (local.get $v3) (local.get $sv))))
        (local.set $v4 (call $canonical (f32x4.mul (local.get $v4) (local.get $sv))))
        (local.set $v5 (call $canonical (f32x4.mul (local.get $v5) (local.get $sv))))
        (local.set $v6 (call $canonical (f32x4.mul (local.get $v6) (local.get $sv))))
        (local.set $v7 (call $canonical (f32x4.mul (local.get $v7) (local.get $sv))))
        (if (i32.eq (local.get $mode) (i32.const 2))
          (then
            (local.set $v0 (v128.xor (local.get $v0) (v128.load offset=0 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v1 (v128.xor (local.get $v1) (v128.load offset=16 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v2 (v128.xor (local.get $v2) (v128.load offset=32 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v3 (v128.xor (local.get $v3) (v128.load offset=48 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v4 (v128.xor (local.get $v4) (v128.load offset=64 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v5 (v128.xor (local.get $v5) (v128.load offset=80 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v6 (v128.xor (local.get $v6) (v128.load offset=96 (i32.add (local.get $masks) (local.get $at)))))
            (local.set $v7 (v128.xor (local.get $v7) (v128.load offset=112 (i32.add (local.get $masks) (local.get $at)))))))
        (v128.store offset=0 (i32.add (local.get $out) (local.get $at)) (local.get $v0))
        (v128.store offset=16 (i32.add (local.get $out) (local.get $at)) (local.get $v1))
        (v128.store offset=32 (i32.add (local.get $out) (local.get $at)) (local.get $v2))
        (v128.store offset=48 (i32.add (local.get $out) (local.get $at)) (local.get $v3))
        (v128.store offset=64 (i32.add (local.get $out) (local.get $at)) (local.get $v4))
        (v128.store offset=80 (i32.add (local.get $out) (local.get $at)) (local.get $v5))
        (v128.store offset=96 (i32.add (local.get $out) (local.get $at)) (local.get $v6))
        (v128.store offset=112 (i32.add (local.get $out) (local.get $at)) (local.get $v7))
        (local.set $at (i32.add (local.get $at) (i32.const 128)))
        (br $next))))

  ;; Blockwise Walsh–Hadamard transform (hadamard.ts) of `n` values (a multiple of 4, in blocks of b ≥ 4 that tile
  ;; them): signs XORed in before (mode 1) or after (mode 2) from `masks` (one word per value), the butterflies
  ;; stage by stage (h = 1, 2, ..., b/2; within a stage the order of the f32 adds does not matter), then × scale.
  ;; Blocks of 8, 16 and 32 go to $hadamard8/16/32 (a block in registers); larger ones take a pass per stage.
  ;; Those three write the stages within a vector (h = 1, 2) out for every vector rather than calling a helper:
  ;; V8 did not inline such a call, and blocks of 32 took 40% longer with it (0.52 → 0.72 ms per 512k values).
  ;; The word kernel's bits: every add, sub and mul is an IEEE f32 operation (NaN lanes are made canonical
  ;; before the signs after; the word kernel's NaN bits are the host's).
  (func (export "hadamard") (param $in i32) (param $out i32) (param $masks i32) (param $n i32) (param $b i32)
    (param $scale f32) (param $mode i32)
    (local $at i32) (local $end i32) (local $h i32) (local $seg i32) (local $j i32) (local $v v128) (local $a v128)
    (local $c v128) (local $sv v128)
    (if (i32.eq (local.get $b) (i32.const 8))
      (then (return (call $hadamard8 (local.get $in) (local.get $out) (local.get $masks) (local.get $n)
        (local.get $scale) (local.get $mode)))))
    (if (i32.eq (local.get $b) (i32.const 16))
      (then (return (call $hadamard16 (local.get $in) (local.get $out) (local.get $masks) (local.get $n)
        (local.get $scale) (local.get $mode)))))
    (if (i32.eq (local.get $b) (i32.const 32))
      (then (return (call $hadamard32 (local.get $in) (local.get $out) (local.get $masks) (local.get $n)
        (local.get $scale) (local.get $mode)))))
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    ;; load (with signs before) into out, where the stages then work in place
    (local.set $at (i32.const 0))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $v (v128.load (i32.add (local.get $in) (local.get $at))))
        (if (i32.eq (local.get $mode) (i32.const 1))
          (then (local.set $v (v128.xor (local.get $v) (v128.load (i32.add (local.get $masks) (local.get $at)))))))
        (v128.store (i32.add (local.get $out) (local.get $at)) (local.get $v))
        (local.set $at (i32.add (local.get $at) (i32.const 16)))
        (br $next)))
    ;; h = 1: pairs (0,1), (2,3) of each vector; h = 2: pairs (0,2), (1,3). a ± c as a + c·(±1), exact.
    (local.set $at (i32.const 0))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $v (v128.load (i32.add (local.get $out) (local.get $at))))
        (local.set $v
          (f32x4.add (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v) (local.get $v))
            (f32x4.mul (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v) (local.get $v))
              (v128.const f32x4 1 -1 1 -1))))
        (if (i32.gt_u (local.get $b) (i32.const 2))
          (then
            (local.set $v
              (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v))
                (f32x4.mul (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v))
                  (v128.const f32x4 1 1 -1 -1))))))
        (v128.store (i32.add (local.get $out) (local.get $at)) (local.get $v))
        (local.set $at (i32.add (local.get $at) (i32.const 16)))
        (br $next)))
    ;; h = 4 .. b/2 (in bytes: 16 .. 2b): segments of 2h, vectors j and j + h of their first half
    (local.set $h (i32.const 16))
    (block $stages
      (loop $stage
        (br_if $stages (i32.ge_u (local.get $h) (i32.shl (local.get $b) (i32.const 2))))
        (local.set $seg (i32.const 0))
        (block $segs
          (loop $nextSeg
            (br_if $segs (i32.ge_u (local.get $seg) (local.get $end)))
            (local.set $j (i32.add (local.get $out) (local.get $seg)))
            (local.set $at (i32.add (local.get $j) (local.get $h)))
            (block $half
              (loop $nextJ
                (br_if $half (i32.ge_u (local.get $j) (local.get $at)))
                (local.set $a (v128.load (local.get $j)))
                (local.set $c (v128.load (i32.add (local.get $j) (local.get $h))))
                (v128.store (local.get $j) (f32x4.add (local.get $a) (local.get $c)))
                (v128.store (i32.add (local.get $j) (local.get $h)) (f32x4.sub (local.get $a) (local.get $c)))
                (local.set $j (i32.add (local.get $j) (i32.const 16)))
                (br $nextJ)))
            (local.set $seg (i32.add (local.get $seg) (i32.shl (local.get $h) (i32.const 1))))
            (br $nextSeg)))
        (local.set $h (i32.shl (local.get $h) (i32.const 1)))
        (br $stage)))
    ;; × scale, canonical NaN, signs after
    (local.set $sv (f32x4.splat (local.get $scale)))
    (local.set $at (i32.const 0))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $v
          (call $canonical (f32x4.mul (v128.load (i32.add (local.get $out) (local.get $at))) (local.get $sv))))
        (if (i32.eq (local.get $mode) (i32.const 2))
          (then (local.set $v (v128.xor (local.get $v) (v128.load (i32.add (local.get $masks) (local.get $at)))))))
        (v128.store (i32.add (local.get $out) (local.get $at)) (local.get $v))
        (local.set $at (i32.add (local.get $at) (i32.const 16)))
        (br $next))))

  ;; QuEST MXFP4 (quest.ts): `blocks` blocks of 32. Per block, in index order: the f32 sum and sum of squares,
  ;; σ² = max(0, sq/32 − mean²), u = |c2·σ²| bits, e = ((E(u) − 127) >> 1) or −27 when u is below $tiny,
  ;; clamped to [−126, 126]; values E2M1(x·2^−e)·2^e (element params as $elem's), and the trust mask (1.0 where
  ;; |x·2^−e| < 6) at $mask. Powers of two scale exactly; the sums are the word kernel's f32 sums.
  (func (export "quest") (param $in i32) (param $out i32) (param $mask i32) (param $blocks i32) (param $c2 f32)
    (param $tiny i32) (param $mbits i32) (param $emin i32) (param $maxBits i32) (param $rd i32)
    (local $b i32) (local $j i32) (local $v f32) (local $sum f32) (local $sq f32) (local $mean f32) (local $u i32)
    (local $e i32) (local $scale v128) (local $recip v128) (local $x v128) (local $lo v128) (local $mb v128)
    (local $maxv v128)
    (local.set $lo (i32x4.splat (i32.add (local.get $emin) (i32.const 127))))
    (local.set $mb (i32x4.splat (local.get $mbits)))
    (local.set $maxv (i32x4.splat (local.get $maxBits)))
    (block $done
      (loop $block
        (br_if $done (i32.ge_u (local.get $b) (local.get $blocks)))
        (local.set $sum (f32.const 0))
        (local.set $sq (f32.const 0))
        (local.set $j (i32.const 0))
        (loop $sums
          (local.set $v (f32.load (i32.add (local.get $in) (local.get $j))))
          (local.set $sum (f32.add (local.get $sum) (local.get $v)))
          (local.set $sq (f32.add (local.get $sq) (f32.mul (local.get $v) (local.get $v))))
          (local.set $j (i32.add (local.get $j) (i32.const 4)))
          (br_if $sums (i32.lt_u (local.get $j) (i32.const 128))))
        (local.set $mean (f32.mul (local.get $sum) (f32.const 0.03125)))
        (local.set $u
          (i32.and (i32.const 0x7fffffff) (i32.reinterpret_f32
            (f32.mul (local.get $c2)
              (f32.max (f32.const 0)
                (f32.sub (f32.mul (local.get $sq) (f32.const 0.03125)) (f32.mul (local.get $mean) (local.get $mean))))))))
        (local.set $e
          (if (result i32) (i32.lt_u (local.get $u) (local.get $tiny))
            (then (i32.const -27))
            (else (i32.shr_s (i32.sub (i32.shr_u (local.get $u) (i32.const 23)) (i32.const 127)) (i32.const 1)))))
        (local.set $e
          (select (i32.const 126)
            (select (i32.const -126) (local.get $e) (i32.lt_s (local.get $e) (i32.const -126)))
            (i32.gt_s (local.get $e) (i32.const 126))))
        (local.set $scale (i32x4.splat (i32.shl (i32.add (local.get $e) (i32.const 127)) (i32.const 23))))
        (local.set $recip (i32x4.splat (i32.shl (i32.sub (i32.const 127) (local.get $e)) (i32.const 23))))
        (local.set $j (i32.const 0))
        (loop $element
          (local.set $x (f32x4.mul (v128.load (i32.add (local.get $in) (local.get $j))) (local.get $recip)))
          (v128.store (i32.add (local.get $out) (local.get $j))
            (call $canonical
              (f32x4.mul
                (call $elem (local.get $x)
                  (v128.load (i32.add (i32.add (local.get $in) (local.get $j)) (local.get $rd))) (local.get $rd)
                  (local.get $lo) (local.get $mb) (local.get $maxv) (local.get $maxv))
                (local.get $scale))))
          (v128.store (i32.add (local.get $mask) (local.get $j))
            (v128.and
              (i32x4.lt_u (v128.and (local.get $x) (v128.const i32x4 0x7fffffff 0x7fffffff 0x7fffffff 0x7fffffff))
                (v128.const i32x4 0x40c00000 0x40c00000 0x40c00000 0x40c00000))
              (v128.const f32x4 1 1 1 1)))
          (local.set $j (i32.add (local.get $j) (i32.const 16)))
          (br_if $element (i32.lt_u (local.get $j) (i32.const 128))))
        (local.set $in (i32.add (local.get $in) (i32.const 128)))
        (local.set $out (i32.add (local.get $out) (i32.const 128)))
        (local.set $mask (i32.add (local.get $mask) (i32.const 128)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (br $block))))

  ;; MX (mx.ts, scale rounding `floor` or `rceil`, float elements with emax_elem >= 0): `blocks` blocks of 32. Shared
  ;; exponent floor(log2 amax) - emax_elem clamped to [-127, 127] (-127 for a zero block); amax NaN/Inf or
  ;; an exponent above 127 makes the block NaN. Values: round(x · 2^-e) · 2^e.
  (func (export "mx") (param $in i32) (param $out i32) (param $blocks i32)
    (param $mbits i32) (param $emin i32) (param $maxBits i32) (param $ovfBits i32) (param $emax i32) (param $rd i32)
    (param $ceilAbove i32)
    (local $lo v128) (local $mb v128) (local $maxv v128) (local $ovf v128)
    (local $b i32) (local $j i32) (local $amax i32) (local $e i32) (local $inv v128) (local $scale v128)
    (local.set $lo (i32x4.splat (i32.add (local.get $emin) (i32.const 127))))
    (local.set $mb (i32x4.splat (local.get $mbits)))
    (local.set $maxv (i32x4.splat (local.get $maxBits)))
    (local.set $ovf (i32x4.splat (local.get $ovfBits)))
    (block $done
      (loop $block
        (br_if $done (i32.ge_u (local.get $b) (local.get $blocks)))
        (local.set $amax (call $amax (local.get $in) (i32.const 8)))
        (local.set $e (i32.const 128))
        (if (i32.lt_u (local.get $amax) (i32.const 0x7f800000))
          (then
            ;; floor(log2 amax) for a normal amax; zero and subnormal amaxes clamp to -127 whatever it is
            (local.set $e
              (i32.sub (i32.sub (i32.shr_u (local.get $amax) (i32.const 23)) (i32.const 127)) (local.get $emax)))
            ;; `rceil`: one binade up when amax's significand exceeds the element max's ($ceilAbove is its
            ;; mantissa field; 0x800000, above every field, for `floor`)
            (if (i32.gt_u (i32.and (local.get $amax) (i32.const 0x7fffff)) (local.get $ceilAbove))
              (then (local.set $e (i32.add (local.get $e) (i32.const 1)))))
            (if (i32.lt_s (local.get $e) (i32.const -127)) (then (local.set $e (i32.const -127))))))
        (if (i32.gt_s (local.get $e) (i32.const 127))
          (then (call $fill (local.get $out) (i32.const 8) (v128.const i32x4 0x7fc00000 0x7fc00000 0x7fc00000 0x7fc00000)))
          (else
            (local.set $inv (i32x4.splat (call $pow2 (i32.sub (i32.const 0) (local.get $e)))))
            (local.set $scale (i32x4.splat (call $pow2 (local.get $e))))
            (local.set $j (i32.const 0))
            (loop $element
              (v128.store (i32.add (local.get $out) (local.get $j))
                (call $canonical
                  (f32x4.mul
                    (call $elem
                      (f32x4.mul (v128.load (i32.add (local.get $in) (local.get $j))) (local.get $inv))
                      (v128.load (i32.add (i32.add (local.get $in) (local.get $j)) (local.get $rd))) (local.get $rd)
                      (local.get $lo) (local.get $mb) (local.get $maxv) (local.get $ovf))
                    (local.get $scale))))
              (local.set $j (i32.add (local.get $j) (i32.const 16)))
              (br_if $element (i32.lt_u (local.get $j) (i32.const 128))))))
        (local.set $in (i32.add (local.get $in) (i32.const 128)))
        (local.set $out (i32.add (local.get $out) (i32.const 128)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (br $block))))

  ;; NVFP4 (nvfp4.ts) for a finite tensor scale $st: `blocks` blocks of 16. $r6 = RN(1/RN(6·s_t)).
  ;; Block scale s_b = UE4M3(amax_b · r6), 0 for a zero block or s_t = 0; elements
  ;; E2M1(x · RN(1/RN(s_b·s_t))), values RN(RN(q·s_b)·s_t). The reference gives a signed zero where x is
  ;; zero (here explicit: 0 · Inf would be NaN) or where s_b·s_t is 0. The latter needs no test: s_b·s_t
  ;; is 0 only when s_b is (r6 overflows to Inf for every s_t below 2^-130.6, making s_b 448), and then
  ;; q = ±6 times s_b = 0 gives the same signed zero. e*: E2M1's M, emin, max bits; s*: UE4M3's (saturating).
  (func (export "nvfp4") (param $in i32) (param $out i32) (param $blocks i32) (param $st f32) (param $r6 f32)
    (param $eMbits i32) (param $eEmin i32) (param $eMax i32) (param $sMbits i32) (param $sEmin i32) (param $sMax i32)
    (param $rd i32) (param $amaxAt i32)
    (local $lo v128) (local $mb v128) (local $maxv v128) (local $slo v128) (local $smb v128) (local $smax v128)
    (local $b i32) (local $j i32) (local $amax i32) (local $sb f32) (local $prod f32)
    (local $r v128) (local $sbv v128) (local $stv v128) (local $x v128) (local $q v128)
    (local.set $lo (i32x4.splat (i32.add (local.get $eEmin) (i32.const 127))))
    (local.set $mb (i32x4.splat (local.get $eMbits)))
    (local.set $maxv (i32x4.splat (local.get $eMax)))
    (local.set $slo (i32x4.splat (i32.add (local.get $sEmin) (i32.const 127))))
    (local.set $smb (i32x4.splat (local.get $sMbits)))
    (local.set $smax (i32x4.splat (local.get $sMax)))
    (local.set $stv (f32x4.splat (local.get $st)))
    (block $done
      (loop $block
        (br_if $done (i32.ge_u (local.get $b) (local.get $blocks)))
        ;; the block's own amax, or one given per block at $amaxAt (16 × 16 tiles: the tile's)
        (local.set $amax
          (if (result i32) (local.get $amaxAt)
            (then (i32.load (i32.add (local.get $amaxAt) (i32.shl (local.get $b) (i32.const 2)))))
            (else (call $amax (local.get $in) (i32.const 4)))))
        (local.set $sb (f32.const 0))
        (if (i32.and (f32.ne (local.get $st) (f32.const 0)) (i32.ne (local.get $amax) (i32.const 0)))
          (then
            (local.set $sb
              (f32x4.extract_lane 0
                (call $elem
                  (f32x4.splat (f32.mul (f32.reinterpret_i32 (local.get $amax)) (local.get $r6)))
                  (v128.const i32x4 0 0 0 0) (i32.const 0) ;; block scales always round to nearest
                  (local.get $slo) (local.get $smb) (local.get $smax) (local.get $smax))))))
        (local.set $prod (f32.mul (local.get $sb) (local.get $st)))
        (local.set $r (f32x4.splat (f32.div (f32.const 1) (local.get $prod))))
        (local.set $sbv (f32x4.splat (local.get $sb)))
        (local.set $j (i32.const 0))
        (loop $element
          (local.set $x (v128.load (i32.add (local.get $in) (local.get $j))))
          (local.set $q
            (call $elem (f32x4.mul (local.get $x) (local.get $r))
              (v128.load (i32.add (i32.add (local.get $in) (local.get $j)) (local.get $rd))) (local.get $rd)
              (local.get $lo) (local.get $mb) (local.get $maxv) (local.get $maxv)))
          (local.set $q
            (v128.bitselect
              (v128.and (local.get $x) (v128.const i32x4 0x80000000 0x80000000 0x80000000 0x80000000))
              (local.get $q)
              (f32x4.eq (local.get $x) (v128.const f32x4 0 0 0 0))))
          (v128.store (i32.add (local.get $out) (local.get $j))
            (f32x4.mul (f32x4.mul (local.get $q) (local.get $sbv)) (local.get $stv)))
          (local.set $j (i32.add (local.get $j) (i32.const 16)))
          (br_if $element (i32.lt_u (local.get $j) (i32.const 64))))
        (local.set $in (i32.add (local.get $in) (i32.const 64)))
        (local.set $out (i32.add (local.get $out) (i32.const 64)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (br $block))))

  ;; Rounds four lanes to integers as round_to_int: nearest, or stochastic on the magnitude (rand/sr as
  ;; $round_grid) with the sign put back; NaN lanes (0 · Inf when 1/s overflows) give 0.
  (func $round_int (param $v v128) (param $rand v128) (param $sr i32) (result v128)
    (local.set $v
      (if (result v128) (local.get $sr)
        (then
          (v128.or (call $round_grid (f32x4.abs (local.get $v)) (local.get $rand) (i32.const 1))
            (v128.and (local.get $v) (v128.const i32x4 0x80000000 0x80000000 0x80000000 0x80000000))))
        (else (f32x4.nearest (local.get $v)))))
    (v128.bitselect (local.get $v) (v128.const f32x4 0 0 0 0) (f32x4.eq (local.get $v) (local.get $v))))

  ;; INT-k values of `bytes` bytes of x under one scale: RN((clamp(round(x · inv) + zp, lov, hiv) − zp) · s).
  (func $int_values (param $in i32) (param $out i32) (param $bytes i32) (param $inv f32) (param $s f32)
    (param $zp f32) (param $lov v128) (param $hiv v128) (param $rd i32)
    (local $j i32) (local $r v128) (local $invv v128) (local $sv v128) (local $zpv v128)
    (local.set $sv (f32x4.splat (local.get $s)))
    (local.set $invv (f32x4.splat (local.get $inv)))
    (local.set $zpv (f32x4.splat (local.get $zp)))
    (block $end
      (loop $element
        (br_if $end (i32.ge_u (local.get $j) (local.get $bytes)))
        (local.set $r
          (call $round_int (f32x4.mul (v128.load (i32.add (local.get $in) (local.get $j))) (local.get $invv))
            (v128.load (i32.add (i32.add (local.get $in) (local.get $j)) (local.get $rd))) (local.get $rd)))
        (local.set $r
          (f32x4.min (f32x4.max (f32x4.add (local.get $r) (local.get $zpv)) (local.get $lov)) (local.get $hiv)))
        (v128.store (i32.add (local.get $out) (local.get $j))
          (f32x4.mul (f32x4.sub (local.get $r) (local.get $zpv)) (local.get $sv)))
        (local.set $j (i32.add (local.get $j) (i32.const 16)))
        (br $element))))

  ;; INT-k values under a given scale s (finite, not 0), its reciprocal inv (finite) and zero point: the element
  ;; pass of "int" for scales computed elsewhere (per-tensor INT-k and Flexpoint, int.ts applyIntScales).
  (func (export "int_given") (param $in i32) (param $out i32) (param $vectors i32) (param $inv f32) (param $s f32)
    (param $zp f32) (param $qmin f32) (param $qmax f32) (param $rd i32)
    (call $int_values (local.get $in) (local.get $out) (i32.shl (local.get $vectors) (i32.const 4)) (local.get $inv)
      (local.get $s) (local.get $zp) (f32x4.splat (local.get $qmin)) (f32x4.splat (local.get $qmax)) (local.get $rd)))

  ;; INT-k (int.ts) over `groups` consecutive groups of 4·$vectors values, codes clamped to [qmin, qmax].
  ;; Symmetric: s = RN(amax · $lr), zero point 0. Asymmetric: min and max taken with 0 included,
  ;; s = RN(RN(max − min) · $lr) (NaN when that overflows), zp = clamp(round(−min · RN(1/s)), 0, qmax)
  ;; (the clamp at 0 mirrors int.ts: −min · RN(1/s) is never negative).
  ;; Values RN((clamp(round(x · RN(1/s)) + zp) − zp) · s); a NaN/Inf in a group makes it NaN, s = 0 gives
  ;; +0. Adding zp (+0 for symmetric) turns a -0 code into +0 (integer codes have no -0).
  (func (export "int") (param $in i32) (param $out i32) (param $groups i32) (param $vectors i32)
    (param $lr f32) (param $qmin f32) (param $qmax f32) (param $asymmetric i32) (param $rd i32)
    (local $g i32) (local $j i32) (local $bytes i32) (local $amax i32) (local $s f32) (local $inv f32)
    (local $lo f32) (local $hi f32) (local $zp f32) (local $x v128) (local $mn v128) (local $mx v128)
    (local $lov v128) (local $hiv v128)
    (local.set $bytes (i32.shl (local.get $vectors) (i32.const 4)))
    (local.set $lov (f32x4.splat (local.get $qmin)))
    (local.set $hiv (f32x4.splat (local.get $qmax)))
    (block $done
      (loop $group
        (br_if $done (i32.ge_u (local.get $g) (local.get $groups)))
        (local.set $amax (call $amax (local.get $in) (local.get $vectors)))
        (local.set $s (f32.mul (f32.reinterpret_i32 (local.get $amax)) (local.get $lr)))
        (if (local.get $asymmetric)
          (then
            ;; min and max with 0 included (NaN lanes are moot: such a group is NaN anyway)
            (local.set $mn (v128.const f32x4 0 0 0 0))
            (local.set $mx (v128.const f32x4 0 0 0 0))
            (local.set $j (i32.const 0))
            (block $end
              (loop $range
                (br_if $end (i32.ge_u (local.get $j) (local.get $bytes)))
                (local.set $x (v128.load (i32.add (local.get $in) (local.get $j))))
                (local.set $mn (f32x4.min (local.get $mn) (local.get $x)))
                (local.set $mx (f32x4.max (local.get $mx) (local.get $x)))
                (local.set $j (i32.add (local.get $j) (i32.const 16)))
                (br $range)))
            (local.set $lo
              (f32.min
                (f32.min (f32x4.extract_lane 0 (local.get $mn)) (f32x4.extract_lane 1 (local.get $mn)))
                (f32.min (f32x4.extract_lane 2 (local.get $mn)) (f32x4.extract_lane 3 (local.get $mn)))))
            (local.set $hi
              (f32.max
                (f32.max (f32x4.extract_lane 0 (local.get $mx)) (f32x4.extract_lane 1 (local.get $mx)))
                (f32.max (f32x4.extract_lane 2 (local.get $mx)) (f32x4.extract_lane 3 (local.get $mx)))))
            (local.set $s (f32.mul (f32.sub (local.get $hi) (local.get $lo)) (local.get $lr)))))
        (if (i32.or (i32.ge_u (local.get $amax) (i32.const 0x7f800000)) (f32.eq (local.get $s) (f32.const inf)))
          (then
            (call $fill (local.get $out) (local.get $vectors)
              (v128.const i32x4 0x7fc00000 0x7fc00000 0x7fc00000 0x7fc00000)))
          (else
            (local.set $inv
              (if (result f32) (f32.eq (local.get $s) (f32.const 0))
                (then (f32.const 0))
                (else (f32.div (f32.const 1) (local.get $s)))))
            (local.set $zp (f32.const 0))
            (if (local.get $asymmetric)
              (then
                (local.set $zp
                  (f32.min (local.get $qmax)
                    (f32.max (f32.const 0)
                      (f32x4.extract_lane 0
                        (call $round_int (f32x4.splat (f32.mul (f32.neg (local.get $lo)) (local.get $inv)))
                          (v128.const i32x4 0 0 0 0) (i32.const 0)))))))) ;; the zero point rounds to nearest
            (call $int_values (local.get $in) (local.get $out) (local.get $bytes) (local.get $inv) (local.get $s)
              (local.get $zp) (local.get $lov) (local.get $hiv) (local.get $rd))))
        (local.set $in (i32.add (local.get $in) (local.get $bytes)))
        (local.set $out (i32.add (local.get $out) (local.get $bytes)))
        (local.set $g (i32.add (local.get $g) (i32.const 1)))
        (br $group))))

  ;; NF4 (nf4.ts, no double quantization): `blocks` blocks of 64. Code values (16) and midpoints (15) as f32
  ;; bits at $table (31 words). absmax NaN/Inf: the block is NaN; absmax 0: +0. Else s = x · RN(1/absmax)
  ;; takes the value of the highest code whose lower midpoint s is strictly above (midpoints ascend, so
  ;; each compare overrides the previous), code 0.0 for a NaN s (0 · Inf); values RN(code · absmax).
  (func (export "nf4") (param $in i32) (param $out i32) (param $blocks i32) (param $table i32)
    (local $b i32) (local $j i32) (local $k i32) (local $amax i32)
    (local $inv v128) (local $scale v128) (local $s v128) (local $v v128)
    (block $done
      (loop $block
        (br_if $done (i32.ge_u (local.get $b) (local.get $blocks)))
        (local.set $amax (call $amax (local.get $in) (i32.const 16)))
        (if (i32.ge_u (local.get $amax) (i32.const 0x7f800000))
          (then (call $fill (local.get $out) (i32.const 16) (v128.const i32x4 0x7fc00000 0x7fc00000 0x7fc00000 0x7fc00000)))
          (else
            (if (i32.eqz (local.get $amax))
              (then (call $fill (local.get $out) (i32.const 16) (v128.const i32x4 0 0 0 0)))
              (else
                (local.set $scale (i32x4.splat (local.get $amax)))
                (local.set $inv (f32x4.splat (f32.div (f32.const 1) (f32.reinterpret_i32 (local.get $amax)))))
                (local.set $j (i32.const 0))
                (loop $element
                  (local.set $s (f32x4.mul (v128.load (i32.add (local.get $in) (local.get $j))) (local.get $inv)))
                  (local.set $v (v128.load32_splat (local.get $table)))
                  (local.set $k (i32.const 0))
                  (loop $midpoint
                    (local.set $v
                      (v128.bitselect
                        (v128.load32_splat (i32.add (local.get $table) (i32.shl (i32.add (local.get $k) (i32.const 1)) (i32.const 2))))
                        (local.get $v)
                        (f32x4.gt (local.get $s)
                          (v128.load32_splat (i32.add (local.get $table) (i32.shl (i32.add (local.get $k) (i32.const 16)) (i32.const 2)))))))
                    (local.set $k (i32.add (local.get $k) (i32.const 1)))
                    (br_if $midpoint (i32.lt_u (local.get $k) (i32.const 15))))
                  (local.set $v
                    (v128.bitselect (v128.const i32x4 0 0 0 0) (local.get $v) (f32x4.ne (local.get $s) (local.get $s))))
                  (v128.store (i32.add (local.get $out) (local.get $j)) (f32x4.mul (local.get $v) (local.get $scale)))
                  (local.set $j (i32.add (local.get $j) (i32.const 16)))
                  (br_if $element (i32.lt_u (local.get $j) (i32.const 256))))))))
        (local.set $in (i32.add (local.get $in) (i32.const 256)))
        (local.set $out (i32.add (local.get $out) (i32.const 256)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (br $block))))

  ;; out[c·rows + r] = in[r·cols + c] for a `rows` × `cols` matrix of 32-bit words (host_quant.ts stages
  ;; blocks along a non-last axis through it): 4 × 4 tiles by shuffles, the last rows mod 4 rows and
  ;; cols mod 4 columns one word at a time. Words move as integers, so every NaN payload survives.
  (func (export "transpose") (param $in i32) (param $out i32) (param $rows i32) (param $cols i32)
    (local $r i32) (local $c i32) (local $wide i32) (local $tall i32) (local $src i32) (local $dst i32) (local $pitch i32)
    (local $step i32) (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $t0 v128) (local $t1 v128) (local $t2 v128) (local $t3 v128)
    (local.set $pitch (i32.shl (local.get $cols) (i32.const 2)))
    (local.set $step (i32.shl (local.get $rows) (i32.const 2)))
    (local.set $wide (i32.and (local.get $cols) (i32.const -4)))
    (local.set $tall (i32.and (local.get $rows) (i32.const -4)))
    (block $done
      (loop $row
        (br_if $done (i32.ge_u (local.get $r) (local.get $tall)))
        (local.set $c (i32.const 0))
        (block $end
          (loop $tile
            (br_if $end (i32.ge_u (local.get $c) (local.get $wide)))
            (local.set $src
              (i32.add (local.get $in) (i32.shl (i32.add (i32.mul (local.get $r) (local.get $cols)) (local.get $c)) (i32.const 2))))
            (local.set $a0 (v128.load (local.get $src)))
            (local.set $a1 (v128.load (i32.add (local.get $src) (local.get $pitch))))
            (local.set $a2 (v128.load (i32.add (local.get $src) (i32.shl (local.get $pitch) (i32.const 1)))))
            (local.set $a3 (v128.load (i32.add (local.get $src) (i32.mul (local.get $pitch) (i32.const 3)))))
            (local.set $t0 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $a0) (local.get $a1)))
            (local.set $t1 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $a0) (local.get $a1)))
            (local.set $t2 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $a2) (local.get $a3)))
            (local.set $t3 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $a2) (local.get $a3)))
            (local.set $dst
              (i32.add (local.get $out) (i32.shl (i32.add (i32.mul (local.get $c) (local.get $rows)) (local.get $r)) (i32.const 2))))
            (v128.store (local.get $dst)
              (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t0) (local.get $t2)))
            (v128.store (i32.add (local.get $dst) (local.get $step))
              (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t0) (local.get $t2)))
            (v128.store (i32.add (local.get $dst) (i32.shl (local.get $step) (i32.const 1)))
              (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t1) (local.get $t3)))
            (v128.store (i32.add (local.get $dst) (i32.mul (local.get $step) (i32.const 3)))
              (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t1) (local.get $t3)))
            (local.set $c (i32.add (local.get $c) (i32.const 4)))
            (br $tile)))
        (local.set $r (i32.add (local.get $r) (i32.const 4)))
        (br $row)))
    ;; the words outside the whole tiles: columns from $wide in the tiled rows, every column below them
    (local.set $r (i32.const 0))
    (block $done
      (loop $row
        (br_if $done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $c (select (local.get $wide) (i32.const 0) (i32.lt_u (local.get $r) (local.get $tall))))
        (block $end
          (loop $col
            (br_if $end (i32.ge_u (local.get $c) (local.get $cols)))
            (i32.store
              (i32.add (local.get $out) (i32.shl (i32.add (i32.mul (local.get $c) (local.get $rows)) (local.get $r)) (i32.const 2)))
              (i32.load
                (i32.add (local.get $in) (i32.shl (i32.add (i32.mul (local.get $r) (local.get $cols)) (local.get $c)) (i32.const 2)))))
            (local.set $c (i32.add (local.get $c) (i32.const 1)))
            (br $col)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $row))))

  ;; Philox-4x32-10 (kernels/philox.ts), one block at a time: words w … w + count − 1 (w = hi·2^32 + lo) of
  ;; the stream keyed (seed, stream) to $out; word w is lane w & 3 of the block with counter (w >> 2, 0, 0).
  (func $philox_blocks (param $out i32) (param $count i32) (param $seed i32) (param $stream i32)
    (param $lo i32) (param $hi i32)
    (local $w i64) (local $end i64) (local $c0 i32) (local $c1 i32) (local $c2 i32) (local $c3 i32)
    (local $k0 i32) (local $k1 i32) (local $round i32) (local $p0 i64) (local $p1 i64) (local $lane i32)
    (local.set $w
      (i64.or (i64.shl (i64.extend_i32_u (local.get $hi)) (i64.const 32)) (i64.extend_i32_u (local.get $lo))))
    (local.set $end (i64.add (local.get $w) (i64.extend_i32_u (local.get $count))))
    (block $done
      (loop $block
        (br_if $done (i64.ge_u (local.get $w) (local.get $end)))
        (local.set $c0 (i32.wrap_i64 (i64.shr_u (local.get $w) (i64.const 2))))
        (local.set $c1 (i32.wrap_i64 (i64.shr_u (local.get $w) (i64.const 34))))
        (local.set $c2 (i32.const 0))
        (local.set $c3 (i32.const 0))
        (local.set $k0 (local.get $seed))
        (local.set $k1 (local.get $stream))
        (local.set $round (i32.const 0))
        (loop $rounds
          (if (local.get $round)
            (then
              (local.set $k0 (i32.add (local.get $k0) (i32.const 0x9E3779B9)))
              (local.set $k1 (i32.add (local.get $k1) (i32.const 0xBB67AE85)))))
          (local.set $p0 (i64.mul (i64.const 0xD2511F53) (i64.extend_i32_u (local.get $c0))))
          (local.set $p1 (i64.mul (i64.const 0xCD9E8D57) (i64.extend_i32_u (local.get $c2))))
          ;; (c0, c1, c2, c3) ← (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
          (local.set $c0
            (i32.xor (i32.xor (i32.wrap_i64 (i64.shr_u (local.get $p1) (i64.const 32))) (local.get $c1)) (local.get $k0)))
          (local.set $c1 (i32.wrap_i64 (local.get $p1)))
          (local.set $c2
            (i32.xor (i32.xor (i32.wrap_i64 (i64.shr_u (local.get $p0) (i64.const 32))) (local.get $c3)) (local.get $k1)))
          (local.set $c3 (i32.wrap_i64 (local.get $p0)))
          (local.set $round (i32.add (local.get $round) (i32.const 1)))
          (br_if $rounds (i32.lt_u (local.get $round) (i32.const 10))))
        (loop $lanes
          (local.set $lane (i32.wrap_i64 (i64.and (local.get $w) (i64.const 3))))
          (i32.store (local.get $out)
            (select (local.get $c0)
              (select (local.get $c1)
                (select (local.get $c2) (local.get $c3) (i32.eq (local.get $lane) (i32.const 2)))
                (i32.eq (local.get $lane) (i32.const 1)))
              (i32.eqz (local.get $lane))))
          (local.set $out (i32.add (local.get $out) (i32.const 4)))
          (local.set $w (i64.add (local.get $w) (i64.const 1)))
          (br_if $lanes
            (i32.and (i64.lt_u (local.get $w) (local.get $end)) (i64.ne (i64.and (local.get $w) (i64.const 3)) (i64.const 0)))))
        (br $block))))

  ;; Philox-4x32-10 as $philox_blocks computes it, for four consecutive blocks at once (block b in lane b of
  ;; each counter word): the same u32 products and xors, so the same words. Writes the 16 words of blocks
  ;; $block … $block + 3 (counter low words; the high word is $chi for all four, the caller keeps them
  ;; from crossing 2^32) to $out in block order.
  (func $philox_x4 (param $out i32) (param $block i32) (param $chi i32) (param $seed i32) (param $stream i32)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128) (local $k0 v128) (local $k1 v128)
    (local $hi0 v128) (local $lo0 v128) (local $hi1 v128) (local $lo1 v128) (local $m0 v128) (local $m1 v128)
    (local $t0 v128) (local $t1 v128) (local $t2 v128) (local $t3 v128) (local $round i32)
    (local.set $c0 (i32x4.add (i32x4.splat (local.get $block)) (v128.const i32x4 0 1 2 3)))
    (local.set $c1 (i32x4.splat (local.get $chi)))
    (local.set $c2 (v128.const i32x4 0 0 0 0))
    (local.set $c3 (v128.const i32x4 0 0 0 0))
    (local.set $k0 (i32x4.splat (local.get $seed)))
    (local.set $k1 (i32x4.splat (local.get $stream)))
    (local.set $m0 (v128.const i32x4 0xD2511F53 0xD2511F53 0xD2511F53 0xD2511F53))
    (local.set $m1 (v128.const i32x4 0xCD9E8D57 0xCD9E8D57 0xCD9E8D57 0xCD9E8D57))
    (loop $rounds
      (if (local.get $round)
        (then
          (local.set $k0 (i32x4.add (local.get $k0) (v128.const i32x4 0x9E3779B9 0x9E3779B9 0x9E3779B9 0x9E3779B9)))
          (local.set $k1 (i32x4.add (local.get $k1) (v128.const i32x4 0xBB67AE85 0xBB67AE85 0xBB67AE85 0xBB67AE85)))))
      ;; high words of the 64-bit products: the odd u32 of lanes (0, 1) and of lanes (2, 3)
      (local.set $hi0
        (i8x16.shuffle 4 5 6 7 12 13 14 15 20 21 22 23 28 29 30 31
          (i64x2.extmul_low_i32x4_u (local.get $c0) (local.get $m0))
          (i64x2.extmul_high_i32x4_u (local.get $c0) (local.get $m0))))
      (local.set $lo0 (i32x4.mul (local.get $c0) (local.get $m0)))
      (local.set $hi1
        (i8x16.shuffle 4 5 6 7 12 13 14 15 20 21 22 23 28 29 30 31
          (i64x2.extmul_low_i32x4_u (local.get $c2) (local.get $m1))
          (i64x2.extmul_high_i32x4_u (local.get $c2) (local.get $m1))))
      (local.set $lo1 (i32x4.mul (local.get $c2) (local.get $m1)))
      (local.set $c0 (v128.xor (v128.xor (local.get $hi1) (local.get $c1)) (local.get $k0)))
      (local.set $c1 (local.get $lo1))
      (local.set $c2 (v128.xor (v128.xor (local.get $hi0) (local.get $c3)) (local.get $k1)))
      (local.set $c3 (local.get $lo0))
      (local.set $round (i32.add (local.get $round) (i32.const 1)))
      (br_if $rounds (i32.lt_u (local.get $round) (i32.const 10))))
    ;; 4×4 transpose: lane b of (c0, c1, c2, c3) becomes the four words of block b
    (local.set $t0 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $c0) (local.get $c1)))
    (local.set $t1 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $c2) (local.get $c3)))
    (local.set $t2 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $c0) (local.get $c1)))
    (local.set $t3 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $c2) (local.get $c3)))
    (v128.store offset=0 (local.get $out)
      (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t0) (local.get $t1)))
    (v128.store offset=16 (local.get $out)
      (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t0) (local.get $t1)))
    (v128.store offset=32 (local.get $out)
      (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t2) (local.get $t3)))
    (v128.store offset=48 (local.get $out)
      (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t2) (local.get $t3))))

  ;; Philox words w … w + count − 1 (w = hi·2^32 + lo) of the stream keyed (seed, stream) to $out: the
  ;; words up to the first group of four whole blocks and those after the last one one block at a time, the
  ;; groups between with $philox_x4 (a group never spans a change of the counter's high word: 2^32 blocks
  ;; start on a multiple of four).
  (func (export "philox") (param $out i32) (param $count i32) (param $seed i32) (param $stream i32)
    (param $lo i32) (param $hi i32)
    (local $w i64) (local $end i64) (local $head i64) (local $groups i64)
    (local.set $w
      (i64.or (i64.shl (i64.extend_i32_u (local.get $hi)) (i64.const 32)) (i64.extend_i32_u (local.get $lo))))
    (local.set $end (i64.add (local.get $w) (i64.extend_i32_u (local.get $count))))
    ;; the first word of a group of four blocks: w rounded up to a multiple of 16
    (local.set $head (i64.and (i64.add (local.get $w) (i64.const 15)) (i64.const -16)))
    (if (i64.gt_u (local.get $head) (local.get $end)) (then (local.set $head (local.get $end))))
    (call $philox_blocks (local.get $out) (i32.wrap_i64 (i64.sub (local.get $head) (local.get $w)))
      (local.get $seed) (local.get $stream) (i32.wrap_i64 (local.get $w)) (i32.wrap_i64 (i64.shr_u (local.get $w) (i64.const 32))))
    (local.set $out (i32.add (local.get $out) (i32.shl (i32.wrap_i64 (i64.sub (local.get $head) (local.get $w))) (i32.const 2))))
    (local.set $w (local.get $head))
    (block $done
      (loop $group
        (br_if $done (i64.gt_u (i64.add (local.get $w) (i64.const 16)) (local.get $end)))
        (call $philox_x4 (local.get $out) (i32.wrap_i64 (i64.shr_u (local.get $w) (i64.const 2)))
          (i32.wrap_i64 (i64.shr_u (local.get $w) (i64.const 34))) (local.get $seed) (local.get $stream))
        (local.set $out (i32.add (local.get $out) (i32.const 64)))
        (local.set $w (i64.add (local.get $w) (i64.const 16)))
        (br $group)))
    (call $philox_blocks (local.get $out) (i32.wrap_i64 (i64.sub (local.get $end) (local.get $w)))
      (local.get $seed) (local.get $stream) (i32.wrap_i64 (local.get $w)) (i32.wrap_i64 (i64.shr_u (local.get $w) (i64.const 32)))))
)
