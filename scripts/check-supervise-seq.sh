#!/usr/bin/env bash
# Judges the sequence-numbered lines of apps/tests/src/supervise.rs in a serial
# transcript (scripts/smoke.sh runs it on every case whose transcript has them).
#
#   scripts/check-supervise-seq.sh LOG
#
# Writer k prints `svq-w<k>-<n>-end` through the console for n = 0, 1, ...; a
# write the console died holding (PeerDied) is reported in the kernel's voice
# as `supervise: told-failed w<k> <n> peer-died`, one no console ever took
# (NotDelivered) that libipc sent again once and that failed again as
# `... resent`; a NotDelivered write must otherwise be resent, never reported
# (any other reason is a problem). At the end `supervise: w<k> wrote <N>
# lines`. Every token for n < N must appear exactly once -- at most once if it
# was told failed (the request in flight) -- in increasing order, and none at
# n >= N. Tokens are matched anywhere in a line: a console killed part-way
# through a line leaves its beginning without the `-end`, and the next output
# follows on the same line. Prints one line per problem (at most 20) and exits
# 1 if there is any; exits 0 with no output when all hold (or when the
# transcript has no such lines).
set -euo pipefail
export LC_ALL=C
log=${1:?usage: check-supervise-seq.sh LOG}

awk '
  { sub(/\r$/, "") }
  # Every line but a whole token line may hold part of a broken one: kept
  # for the interleaving check below.
  { text[NR] = $0 }
  /^\[pid [0-9]+\] svq-w[0-9]+-[0-9]+-end$/ { whole[NR] = 1 }
  !/^\[pid [0-9]+\] svq-w[0-9]+-[0-9]+-end$/ { frag[++nfrag] = NR }
  {
    line = $0
    while (match(line, /svq-w[0-9]+-[0-9]+-end/)) {
      tok = substr(line, RSTART + 5, RLENGTH - 9)
      line = substr(line, RSTART + RLENGTH)
      split(tok, p, "-")
      k = p[1] + 0; n = p[2] + 0
      seen[k, n]++
      writers[k] = 1
      if ((k in last) && n <= last[k]) {
        bad[++nbad] = sprintf("writer %d: seq %d printed after seq %d", k, n, last[k])
      }
      last[k] = n
    }
  }
  /supervise: told-failed w[0-9]+ [0-9]+ (peer-died|resent)$/ {
    m = $0; sub(/.*supervise: told-failed w/, "", m); split(m, p, " ")
    failed[p[1] + 0, p[2] + 0] = 1
  }
  /supervise: told-failed w/ && !/supervise: told-failed w[0-9]+ [0-9]+ (peer-died|resent)$/ {
    bad[++nbad] = sprintf("a write told failed without PeerDied or a resend: %s", $0)
  }
  /supervise: w[0-9]+ wrote [0-9]+ lines$/ {
    m = $0; sub(/.*supervise: w/, "", m); split(m, p, " ")
    wrote[p[1] + 0] = p[3] + 0
    writers[p[1] + 0] = 1
    runs++
  }
  # Whether s holds t as a subsequence (its bytes in order, gaps allowed).
  function subseq(t, s,    i, j) {
    j = 1
    for (i = 1; i <= length(s) && j <= length(t); i++) if (substr(s, i, 1) == substr(t, j, 1)) j++
    return j > length(t)
  }
  # The kernel writes its log to COM1 while the console server writes its
  # lines there too, each under its own lock, so their bytes can interleave
  # (seen at -smp 4: the `init: X died, restarting` line of init woven byte by byte
  # through one or two console lines). A seq answered Written but with no
  # intact token counts as printed if its token is a subsequence of a broken
  # line (any line but a whole `[pid N] svq-...-end` one) and the next
  # one or two lines that are not whole token lines either; each broken
  # line accounts for one seq.
  # Window `size` (1 to 3 lines) from broken line l: it and the lines after
  # it that are not whole token lines either.
  function window(l, size,    w, j) {
    w = text[l]
    for (j = 1; j < size; j++) {
      if ((l + j) in whole || (l + j) > NR) return ""
      w = w "\n" text[l + j]
    }
    return w
  }
  # Credits the missing seqs to broken lines: one-line windows first, so
  # a line that holds one token whole-but-woven is not taken by a
  # token of a neighbour spread over it and the next line.
  function credit(    size, m, i, w) {
    for (size = 1; size <= 3; size++) {
      for (m = 1; m <= nmissing; m++) {
        if (m in credited) continue
        for (i = 1; i <= nfrag; i++) {
          if (i in used) continue
          w = window(frag[i], size)
          if (w != "" && subseq(missing[m], w)) {
            used[i] = 1; credited[m] = 1
            break
          }
        }
      }
    }
  }
  END {
    for (k in writers) {
      if (!(k in wrote)) {
        bad[++nbad] = sprintf("writer %d: no \"supervise: w%d wrote N lines\" summary", k, k)
        continue
      }
      for (n = 0; n < wrote[k]; n++) {
        c = seen[k, n] + 0
        if (c > 1) {
          bad[++nbad] = sprintf("writer %d: seq %d printed %d times", k, n, c)
        } else if (c == 0 && !((k, n) in failed)) {
          missing[++nmissing] = "svq-w" k "-" n "-end"
        }
      }
      for (key in seen) {
        split(key, p, SUBSEP)
        if (p[1] == k && p[2] + 0 >= wrote[k]) {
          bad[++nbad] = sprintf("writer %d: seq %d printed beyond the %d written", k, p[2], wrote[k])
        }
      }
    }
    credit()
    for (m = 1; m <= nmissing; m++) {
      if (!(m in credited)) {
        split(missing[m], p, "-")
        bad[++nbad] = sprintf("writer %s: seq %s lost (its write was answered Written)", substr(p[2], 2), p[3])
      }
    }
    for (i = 1; i <= nbad && i <= 20; i++) print "supervise seq: " bad[i]
    if (nbad > 20) print "supervise seq: ... and " (nbad - 20) " more"
    exit nbad > 0
  }
' "$log"
