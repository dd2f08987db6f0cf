/* Runs fuzz_packet.c's LLVMFuzzerTestOneInput once on each file named on
 * the command line, without libFuzzer, so that the seed corpus and every
 * regression input run as a plain ctest with any compiler (gcc, MinGW,
 * MSVC) and under any sanitizer. The input's checks abort() on a mismatch;
 * the name printed last is then the culprit.
 *
 *   fuzz_replay FILE...
 *
 * Files, not folders: listing a folder is not portable C, and CMake lists
 * them when it configures (tests/fuzz/CMakeLists.txt). */
#if defined(_MSC_VER) && !defined(_CRT_SECURE_NO_WARNINGS)
/* MSVC calls fopen unsafe; it is the portable way to open a file. */
#define _CRT_SECURE_NO_WARNINGS
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

/* The fuzzer's inputs stay small (libFuzzer's -max_len is 4096 by
 * default); a far larger file is a mistake, not an input. */
#define REPLAY_MAX (1024 * 1024)


/* Read `path` into a block of exactly its size (one byte for an empty
 * file), so that ASan sees a read past the input as libFuzzer's would.
 * Returns the block, or NULL with a message. */
static uint8_t* replay_read(const char* path, size_t* len) {
  FILE* f = fopen(path, "rb");
  uint8_t buf[4096];
  uint8_t* data = NULL;
  size_t n;
  *len = 0;
  if (f == NULL) {
    fprintf(stderr, "fuzz_replay: cannot open %s\n", path);
    return NULL;
  }
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
    uint8_t* grown;
    if (*len + n > REPLAY_MAX) {
      fprintf(stderr, "fuzz_replay: %s is over %d bytes\n", path, REPLAY_MAX);
      goto fail;
    }
    grown = realloc(data, *len + n);
    if (grown == NULL) {
      fprintf(stderr, "fuzz_replay: out of memory\n");
      goto fail;
    }
    data = grown;
    memcpy(data + *len, buf, n);
    *len += n;
  }
  if (ferror(f)) {
    fprintf(stderr, "fuzz_replay: cannot read %s\n", path);
    goto fail;
  }
  fclose(f);
  if (data == NULL) {
    data = malloc(1);
    if (data == NULL)
      fprintf(stderr, "fuzz_replay: out of memory\n");
  }
  return data;

fail:
  free(data);
  fclose(f);
  return NULL;
}


int main(int argc, char** argv) {
  int i;
  if (argc < 2) {
    fprintf(stderr, "usage: fuzz_replay FILE...\n");
    return 2;
  }
  for (i = 1; i < argc; i++) {
    size_t len;
    uint8_t* data = replay_read(argv[i], &len);
    if (data == NULL)
      return 1;
    printf("fuzz_replay: %s (%zu bytes)\n", argv[i], len);
    fflush(stdout);
    LLVMFuzzerTestOneInput(data, len);
    free(data);
  }
  printf("fuzz_replay: %d inputs passed\n", argc - 1);
  return 0;
}
