;; f64 Cholesky factorisation for GPTQ on the host (formats/ptq/linalg.ts drives it): A = R·Rᵀ with R upper
;; triangular, from the last pivot up, computed in place on the upper triangle of A (row-major f64).
;;
;; Every dot product runs in one fixed order, which linalg.ts's JS loops repeat exactly: two lanes (the even
;; and the odd k) summed k upwards, the last term of an odd length added to the even lane, then even + odd.
;; WebAssembly's f64 multiply and add are IEEE operations rounded to nearest-even (no fused multiply-add),
;; as JavaScript's, so both give the same bits.
;;
;; Addresses are bytes; rows are n·8 bytes apart.
(module
  (memory (export "memory") 1)

  ;; Σ_k x[k]·y[k] for k < len, in the two-lane order of the header.
  (func $dot (param $x i32) (param $y i32) (param $len i32) (result f64)
    (local $acc v128) (local $k i32) (local $end i32) (local $s0 f64)
    (local.set $end (i32.shl (i32.and (local.get $len) (i32.const -2)) (i32.const 3)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $k) (local.get $end)))
        (local.set $acc
          (f64x2.add (local.get $acc)
            (f64x2.mul
              (v128.load (i32.add (local.get $x) (local.get $k)))
              (v128.load (i32.add (local.get $y) (local.get $k))))))
        (local.set $k (i32.add (local.get $k) (i32.const 16)))
        (br $next)))
    (local.set $s0 (f64x2.extract_lane 0 (local.get $acc)))
    (if (i32.and (local.get $len) (i32.const 1))
      (then
        (local.set $s0
          (f64.add (local.get $s0)
            (f64.mul
              (f64.load (i32.add (local.get $x) (local.get $end)))
              (f64.load (i32.add (local.get $y) (local.get $end))))))))
    (f64.add (local.get $s0) (f64x2.extract_lane 1 (local.get $acc))))

  ;; One finished dot product from its two lanes and, for an odd length, the last term.
  (func $finish (param $acc v128) (param $odd i32) (param $x i32) (param $y i32) (result f64)
    (local $s0 f64)
    (local.set $s0 (f64x2.extract_lane 0 (local.get $acc)))
    (if (local.get $odd)
      (then (local.set $s0 (f64.add (local.get $s0) (f64.mul (f64.load (local.get $x)) (f64.load (local.get $y)))))))
    (f64.add (local.get $s0) (f64x2.extract_lane 1 (local.get $acc))))

  ;; Eight dot products: rows m < 4 of x ($xs bytes apart from $x) with y0 (out[m]) and y1 (out[4 + m]),
  ;; each over len values in the order of $dot. out: 8 f64.
  (func $dot4x2 (param $x i32) (param $xs i32) (param $y0 i32) (param $y1 i32) (param $len i32) (param $out i32)
    (local $k i32) (local $end i32) (local $u v128) (local $v v128) (local $e v128)
    (local $x1 i32) (local $x2 i32) (local $x3 i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $b0 v128) (local $b1 v128) (local $b2 v128) (local $b3 v128)
    (local $odd i32)
    (local.set $x1 (i32.add (local.get $x) (local.get $xs)))
    (local.set $x2 (i32.add (local.get $x1) (local.get $xs)))
    (local.set $x3 (i32.add (local.get $x2) (local.get $xs)))
    (local.set $end (i32.shl (i32.and (local.get $len) (i32.const -2)) (i32.const 3)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $k) (local.get $end)))
        (local.set $u (v128.load (i32.add (local.get $y0) (local.get $k))))
        (local.set $v (v128.load (i32.add (local.get $y1) (local.get $k))))
        (local.set $e (v128.load (i32.add (local.get $x) (local.get $k))))
        (local.set $a0 (f64x2.add (local.get $a0) (f64x2.mul (local.get $e) (local.get $u))))
        (local.set $b0 (f64x2.add (local.get $b0) (f64x2.mul (local.get $e) (local.get $v))))
        (local.set $e (v128.load (i32.add (local.get $x1) (local.get $k))))
        (local.set $a1 (f64x2.add (local.get $a1) (f64x2.mul (local.get $e) (local.get $u))))
        (local.set $b1 (f64x2.add (local.get $b1) (f64x2.mul (local.get $e) (local.get $v))))
        (local.set $e (v128.load (i32.add (local.get $x2) (local.get $k))))
        (local.set $a2 (f64x2.add (local.get $a2) (f64x2.mul (local.get $e) (local.get $u))))
        (local.set $b2 (f64x2.add (local.get $b2) (f64x2.mul (local.get $e) (local.get $v))))
        (local.set $e (v128.load (i32.add (local.get $x3) (local.get $k))))
        (local.set $a3 (f64x2.add (local.get $a3) (f64x2.mul (local.get $e) (local.get $u))))
        (local.set $b3 (f64x2.add (local.get $b3) (f64x2.mul (local.get $e) (local.get $v))))
        (local.set $k (i32.add (local.get $k) (i32.const 16)))
        (br $next)))
    (local.set $odd (i32.and (local.get $len) (i32.const 1)))
    (local.set $y0 (i32.add (local.get $y0) (local.get $end)))
    (local.set $y1 (i32.add (local.get $y1) (local.get $end)))
    (local.set $x (i32.add (local.get $x) (local.get $end)))
    (local.set $x1 (i32.add (local.get $x1) (local.get $end)))
    (local.set $x2 (i32.add (local.get $x2) (local.get $end)))
    (local.set $x3 (i32.add (local.get $x3) (local.get $end)))
    (f64.store offset=0 (local.get $out) (call $finish (local.get $a0) (local.get $odd) (local.get $x) (local.get $y0)))
    (f64.store offset=8 (local.get $out) (call $finish (local.get $a1) (local.get $odd) (local.get $x1) (local.get $y0)))
    (f64.store offset=16 (local.get $out) (call $finish (local.get $a2) (local.get $odd) (local.get $x2) (local.get $y0)))
    (f64.store offset=24 (local.get $out) (call $finish (local.get $a3) (local.get $odd) (local.get $x3) (local.get $y0)))
    (f64.store offset=32 (local.get $out) (call $finish (local.get $b0) (local.get $odd) (local.get $x) (local.get $y1)))
    (f64.store offset=40 (local.get $out) (call $finish (local.get $b1) (local.get $odd) (local.get $x1) (local.get $y1)))
    (f64.store offset=48 (local.get $out) (call $finish (local.get $b2) (local.get $odd) (local.get $x2) (local.get $y1)))
    (f64.store offset=56 (local.get $out) (call $finish (local.get $b3) (local.get $odd) (local.get $x3) (local.get $y1))))

  ;; √pivot, or -1 when the pivot is not positive and finite (then it is stored at $info).
  (func $root (param $pivot f64) (param $info i32) (result f64)
    (if (i32.and (f64.gt (local.get $pivot) (f64.const 0)) (f64.lt (local.get $pivot) (f64.const inf)))
      (then (return (f64.sqrt (local.get $pivot)))))
    (f64.store (local.get $info) (local.get $pivot))
    (f64.const -1))

  ;; R in place of the upper triangle of the n×n matrix at $a (the lower triangle is left as it was).
  ;; $info: 8 bytes for a failing pivot, then 64 bytes of scratch. Returns -1, or the failing pivot's index.
  (func (export "reverse_cholesky") (param $a i32) (param $n i32) (param $info i32) (result i32)
    (local $row i32) (local $i i32) (local $p i32) (local $ri i32) (local $rp i32) (local $from i32)
    (local $tail i32) (local $di f64) (local $rpi f64) (local $dp f64) (local $j i32) (local $rj i32)
    (local $m i32) (local $rji f64) (local $sums i32) (local $at i32)
    (local.set $row (i32.shl (local.get $n) (i32.const 3)))
    (local.set $sums (i32.add (local.get $info) (i32.const 8)))
    (local.set $i (i32.sub (local.get $n) (i32.const 1)))
    (block $pairs
      (loop $pair
        (br_if $pairs (i32.lt_s (local.get $i) (i32.const 1)))
        (local.set $p (i32.sub (local.get $i) (i32.const 1)))
        (local.set $ri (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $row))))
        (local.set $rp (i32.sub (local.get $ri) (local.get $row)))
        (local.set $from (i32.shl (i32.add (local.get $i) (i32.const 1)) (i32.const 3)))
        (local.set $tail (i32.sub (i32.sub (local.get $n) (local.get $i)) (i32.const 1)))
        ;; d_i, r_pi, d_p
        (local.set $at (i32.add (local.get $ri) (i32.shl (local.get $i) (i32.const 3))))
        (local.set $di
          (call $root
            (f64.sub (f64.load (local.get $at))
              (call $dot (i32.add (local.get $ri) (local.get $from)) (i32.add (local.get $ri) (local.get $from)) (local.get $tail)))
            (local.get $info)))
        (if (f64.lt (local.get $di) (f64.const 0)) (then (return (local.get $i))))
        (f64.store (local.get $at) (local.get $di))
        (local.set $at (i32.add (local.get $rp) (i32.shl (local.get $i) (i32.const 3))))
        (local.set $rpi
          (f64.div
            (f64.sub (f64.load (local.get $at))
              (call $dot (i32.add (local.get $rp) (local.get $from)) (i32.add (local.get $ri) (local.get $from)) (local.get $tail)))
            (local.get $di)))
        (f64.store (local.get $at) (local.get $rpi))
        (local.set $at (i32.add (local.get $rp) (i32.shl (local.get $p) (i32.const 3))))
        (local.set $dp
          (call $root
            (f64.sub
              (f64.sub (f64.load (local.get $at)) (f64.mul (local.get $rpi) (local.get $rpi)))
              (call $dot (i32.add (local.get $rp) (local.get $from)) (i32.add (local.get $rp) (local.get $from)) (local.get $tail)))
            (local.get $info)))
        (if (f64.lt (local.get $dp) (f64.const 0)) (then (return (local.get $p))))
        (f64.store (local.get $at) (local.get $dp))
        ;; rows j < p, four at a time: columns i and p from one pass over their tails
        (local.set $j (i32.const 0))
        (block $quads
          (loop $quad
            (br_if $quads (i32.ge_s (i32.add (local.get $j) (i32.const 3)) (local.get $p)))
            (local.set $rj (i32.add (local.get $a) (i32.mul (local.get $j) (local.get $row))))
            (call $dot4x2 (i32.add (local.get $rj) (local.get $from)) (local.get $row)
              (i32.add (local.get $ri) (local.get $from)) (i32.add (local.get $rp) (local.get $from))
              (local.get $tail) (local.get $sums))
            (local.set $m (i32.const 0))
            (loop $each
              (local.set $at (i32.add (local.get $rj) (i32.shl (local.get $i) (i32.const 3))))
              (local.set $rji
                (f64.div
                  (f64.sub (f64.load (local.get $at))
                    (f64.load (i32.add (local.get $sums) (i32.shl (local.get $m) (i32.const 3)))))
                  (local.get $di)))
              (f64.store (local.get $at) (local.get $rji))
              (local.set $at (i32.sub (local.get $at) (i32.const 8)))
              (f64.store (local.get $at)
                (f64.div
                  (f64.sub (f64.load (local.get $at))
                    (f64.add (f64.load offset=32 (i32.add (local.get $sums) (i32.shl (local.get $m) (i32.const 3))))
                      (f64.mul (local.get $rji) (local.get $rpi))))
                  (local.get $dp)))
              (local.set $rj (i32.add (local.get $rj) (local.get $row)))
              (local.set $m (i32.add (local.get $m) (i32.const 1)))
              (br_if $each (i32.lt_u (local.get $m) (i32.const 4))))
            (local.set $j (i32.add (local.get $j) (i32.const 4)))
            (br $quad)))
        ;; the rows left, one at a time
        (block $singles
          (loop $single
            (br_if $singles (i32.ge_s (local.get $j) (local.get $p)))
            (local.set $rj (i32.add (local.get $a) (i32.mul (local.get $j) (local.get $row))))
            (local.set $at (i32.add (local.get $rj) (i32.shl (local.get $i) (i32.const 3))))
            (local.set $rji
              (f64.div
                (f64.sub (f64.load (local.get $at))
                  (call $dot (i32.add (local.get $rj) (local.get $from)) (i32.add (local.get $ri) (local.get $from)) (local.get $tail)))
                (local.get $di)))
            (f64.store (local.get $at) (local.get $rji))
            (local.set $at (i32.sub (local.get $at) (i32.const 8)))
            (f64.store (local.get $at)
              (f64.div
                (f64.sub (f64.load (local.get $at))
                  (f64.add
                    (call $dot (i32.add (local.get $rj) (local.get $from)) (i32.add (local.get $rp) (local.get $from)) (local.get $tail))
                    (f64.mul (local.get $rji) (local.get $rpi))))
                (local.get $dp)))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $single)))
        (local.set $i (i32.sub (local.get $i) (i32.const 2)))
        (br $pair)))
    (if (i32.eqz (local.get $i))
      (then
        (local.set $di
          (call $root
            (f64.sub (f64.load (local.get $a))
              (call $dot (i32.add (local.get $a) (i32.const 8)) (i32.add (local.get $a) (i32.const 8)) (i32.sub (local.get $n) (i32.const 1))))
            (local.get $info)))
        (if (f64.lt (local.get $di) (f64.const 0)) (then (return (i32.const 0))))
        (f64.store (local.get $a) (local.get $di))))
    (i32.const -1)))
