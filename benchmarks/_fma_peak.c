/* FMA throughput and clock of one core, for the roofline of run_benchmarks.py.

   ./fma_peak WIDTH N REPS   (WIDTH = 128, 256 or 512)
   prints: <double flop/s of one core> <cycles/s of that core>

   Twelve independent chains of packed double FMAs (enough to keep two FMA
   units with a latency of 4-5 cycles busy); at WIDTH 128, the peak of code
   without FMA (the baseline x86-64 "generic" engine): six chains of SSE2
   multiplies and six of adds, 1 flop per lane each.  Timed by the thread's CPU clock so
   that other processes on a shared machine do not count; then the clock from
   a chain of dependent 64-bit integer multiplies (3 cycles each on x86-64).
   Built at run time by benchmarks/_peak.py with the system C compiler. */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define NACC 12

static double cpu_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

__attribute__((target("avx512f"))) static double chains512(long n) {
  __m512d a[NACC], m = _mm512_set1_pd(0.999999), c = _mm512_set1_pd(1e-7);
  for (int i = 0; i < NACC; i++) a[i] = _mm512_set1_pd(1.0 + i);
  for (long k = 0; k < n; k++) {
#pragma GCC unroll 12
    for (int i = 0; i < NACC; i++) a[i] = _mm512_fmadd_pd(a[i], m, c);
  }
  double s = 0;
  for (int i = 0; i < NACC; i++) s += _mm512_reduce_add_pd(a[i]);
  return s;
}

static double chains128(long n) {
  __m128d a[NACC], m = _mm_set1_pd(0.999999), c = _mm_set1_pd(1e-7);
  double t[2], s = 0;
  for (int i = 0; i < NACC; i++) a[i] = _mm_set1_pd(1.0 + i);
  for (long k = 0; k < n; k++) {
#pragma GCC unroll 6
    for (int i = 0; i < NACC / 2; i++) a[i] = _mm_mul_pd(a[i], m);
#pragma GCC unroll 6
    for (int i = NACC / 2; i < NACC; i++) a[i] = _mm_add_pd(a[i], c);
  }
  for (int i = 0; i < NACC; i++) {
    _mm_storeu_pd(t, a[i]);
    s += t[0] + t[1];
  }
  return s;
}

__attribute__((target("avx2,fma"))) static double chains256(long n) {
  __m256d a[NACC], m = _mm256_set1_pd(0.999999), c = _mm256_set1_pd(1e-7);
  double t[4], s = 0;
  for (int i = 0; i < NACC; i++) a[i] = _mm256_set1_pd(1.0 + i);
  for (long k = 0; k < n; k++) {
#pragma GCC unroll 12
    for (int i = 0; i < NACC; i++) a[i] = _mm256_fmadd_pd(a[i], m, c);
  }
  for (int i = 0; i < NACC; i++) {
    _mm256_storeu_pd(t, a[i]);
    s += t[0] + t[1] + t[2] + t[3];
  }
  return s;
}

#define IMUL4 "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\t"

static double cycles_per_s(long n) {
  long x = 1, m = 1;
  double t0 = cpu_now();
  for (long k = 0; k < n; k++)
    __asm__ volatile(IMUL4 IMUL4 IMUL4 IMUL4 IMUL4 IMUL4 IMUL4 IMUL4
                     IMUL4 IMUL4 IMUL4 IMUL4 IMUL4 IMUL4 IMUL4 IMUL4 : "+r"(x) : "r"(m));
  return 3.0 * 64 * (double)n / (cpu_now() - t0);
}

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  const int width = atoi(argv[1]);
  const long n = atol(argv[2]);
  const int reps = atoi(argv[3]);
  double best = 0, hz = 0, sink = 0;
  for (int r = 0; r < reps; r++) {
    double t0 = cpu_now();
    sink += width == 512 ? chains512(n) : width == 256 ? chains256(n) : chains128(n);
    /* an FMA is 2 flops per lane; a multiply or an add 1 */
    double rate = (width == 128 ? 1.0 : 2.0) * (width / 64) * NACC * (double)n /
                  (cpu_now() - t0);
    if (rate > best) best = rate;
    double f = cycles_per_s(n / 4);
    if (f > hz) hz = f;
  }
  printf("%.6e %.6e\n", best, hz);
  return sink == 42.0;  /* keeps the chains alive */
}
