#!/usr/bin/env bash
# Boot tests: builds Mica once, boots it headless under QEMU in each configuration
# of the case table below, saves each serial transcript to target/smoke/<case>.log
# and judges it by the runner's exit status and regexes over the transcript.
#
#   scripts/smoke.sh                  run every case
#   scripts/smoke.sh boot-banner      run the named cases (shell globs work: 'ktest-*')
#   scripts/smoke.sh --list           list the cases
#   scripts/smoke.sh --lint           check that every required regex is anchored
#   scripts/smoke.sh --repeat N CASE...  run each named case N times in the
#                                     deterministic icount mode (runner --icount)
#                                     and report how often it failed
#   scripts/smoke.sh --record-failures [CASE...]  boot each single-CPU BIOS
#                                     case under record/replay (runner --record)
#                                     and keep the recording of every one that
#                                     fails in target/smoke/recordings/<case>
#                                     (printed); passing cases' are deleted
#
# Environment: SMOKE_TIMEOUT (seconds per case, default 240), SMOKE_JOBS (cases
# booted in parallel, default 2), SMOKE_NO_BUILD=1 (skip `cargo build`),
# SMOKE_RUNNER (runner binary, default target/debug/mica).
#
# The last line of output is always `N passed, M failed`; the exit status is
# non-zero when M > 0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LC_ALL=C

# --- case registry ------------------------------------------------------------------
CASES=()
declare -A CASE_ARGS=() CASE_EXIT=() CASE_CHECKS=() CASE_KIND=() CASE_STDIN=()

# boot_case NAME "RUNNER ARGS" EXPECTED_EXIT REGEX... [!REGEX...]
#   NAME           the case's name (also target/smoke/NAME.log)
#   RUNNER ARGS    runner flags as one string; shell quoting works inside it,
#                  e.g. "--smp 2 --cmdline 'init=tests log=debug'". The harness
#                  adds --headless and --timeout $SMOKE_TIMEOUT before them (a
#                  --timeout here overrides it for this case).
#   EXPECTED_EXIT  the runner's exit status: 0 guest success, 1 guest failure,
#                  3 reset/triple fault, 124 timeout; '0|1' accepts either
#   REGEX          an extended regex (grep -E) some transcript line must match;
#   !REGEX         one that no line may match.
# (`case` itself is a bash keyword, hence the name.)
boot_case() {
  local name=$1 args=$2 expect=$3
  shift 3
  if [[ -n ${CASE_EXIT[$name]+x} ]]; then
    echo "smoke: case $name defined twice" >&2
    exit 2
  fi
  CASES+=("$name")
  CASE_KIND[$name]=${KIND:-boot}
  CASE_STDIN[$name]=${STDIN:-}
  CASE_ARGS[$name]=$args
  CASE_EXIT[$name]=$expect
  local checks="" c
  for c in "$@"; do checks+="$c"$'\x1f'; done
  CASE_CHECKS[$name]=$checks
}

# --- expected suite sizes -------------------------------------------------------------
# Each suite states its size first (`tests: N cases` from apps/tests, `ktest: N cases`
# from the kernel's ktest) and ends with `N passed, 0 failed`. Both must equal the
# number committed here, so an empty run, a lost case or an unannounced new one fails.
# Adding a case? Bump its suite's number in the same commit.
TESTS_CASES=252 # ring-3 cases in apps/tests/src/main.rs CASES
KTEST_CASES=31 # in-kernel cases in microkernel/src/ktest.rs CASES
# User output carries the kernel's `[pid N] ` prefix; kernel output does not.
PID_PREFIX='^\[pid [0-9]+\] '
# The suite's own lines are judged by its pid: init starts its supervised
# servers first, in init/src/names.rs SERVERS order (loader pid 2, kv pid 3,
# console pid 4, procmgr pid 5), then the suite (pid 6); any other process (a
# test's child) could print the same words behind its own. A server added to
# SERVERS moves it by one.
SUITE_PID=6
PROCMGR_PID=5
SUITE="^\[pid ${SUITE_PID}\] "
TESTS_COUNTS=("${SUITE}tests: ${TESTS_CASES} cases\$" "${SUITE}${TESTS_CASES} passed, 0 failed\$")
KTEST_COUNTS=("^ktest: ${KTEST_CASES} cases\$" "^${KTEST_CASES} passed, 0 failed\$")

# --- the case table -------------------------------------------------------------------
BANNER='^mica: booted on x86_64, [0-9]+ MiB usable RAM, [0-9]+ boot modules, cmdline "'

# Record and replay (runner --record/--replay, src/replay.rs): the suite at
# one CPU is recorded, the recording replayed, and the two raw serial
# transcripts (before the symbolizer adds lines) must be byte-identical, with
# the same exit status. The checks apply to the recorded run. What is tested
# here is the replay's fidelity, but the suite must pass too: the one case
# that failed under icount (killed_process_spawns_no_child, whose kill was
# a 1 ms timer the spawn outran) is timed by the spawn itself since tidy,
# session 19, so exit 0 and every case passed.
# Defined first so it starts first: the longest case (one CPU, icount, the
# whole suite twice: about 3-4 minutes a half on a quiet 2-core host, more
# under load) runs beside all the others instead of after them. The limit
# is per half: 840 s (a replay ran past 540 s on a host at load 8-17,
# session 20).
KIND=record-replay boot_case record-replay-tests "--timeout 840 --cmdline init=tests" 0 \
  '^smp: 1 of 1 CPUs online' \
  "${TESTS_COUNTS[@]}" \
  '^mica: shutdown requested by init' \
  '!^KERNEL PANIC'

boot_case boot-banner "--cmdline ktest" 0 \
  "${BANNER}.*ktest.*\"" \
  "${KTEST_COUNTS[@]}" \
  '!PANIC'

# The plain boot, what `scripts/run.sh` shows a person: banner, init greets
# from ring 3, starts its servers and the shell (the default `init=`). The
# harness's stdin is /dev/null: at its end the runner sends Ctrl-D, which
# the console echoes and the shell takes as the end of input, so the boot
# ends by itself, powered off by init. (Under --repeat and --record-failures
# the runner's icount mode adds `bench.icount` to the command line.)
boot_case hello "" 0 \
  "${BANNER}(bench\\.icount)?\"" \
  '^smp: 1 of 1 CPUs online' \
  '^\[pid 1\] Hello from userland!$' \
  '^\[pid 1\] init: all servers up$' \
  '^\[pid [0-9]+\] mica shell: type `help`$' \
  '^\[pid [0-9]+\] shell: bye$' \
  '^mica: shutdown requested by init \(success\)$' \
  '!PANIC' '!user fault' '!timeout'

# `init=none`: init greets, starts its servers and ends cleanly.
boot_case init-none "--cmdline init=none" 0 \
  '^\[pid 1\] Hello from userland!$' \
  '^\[pid 1\] init: all servers up$' \
  '^mica: init ended \(Exited\(0\)\)' \
  '!PANIC' '!user fault' '!mica shell'

# The crash reports, symbolized by the runner (src/symbolize.rs): under each
# raw backtrace entry (kept as the kernel printed it), one `at function
# (file:line)` line per frame, inlined frames first and marked.
SYM='      at '
boot_case ktest-fault "--cmdline ktest=fault" 1 \
  '^KERNEL PANIC on CPU 0: EXCEPTION #PF .*CR2=0x10000000' \
  '^  backtrace:' \
  '^    0xffffffff[0-9a-f]{8}$' \
  "^${SYM}core::ptr::read_volatile \\(library/core/src/ptr/mod\\.rs:[0-9]+\\) \\[inlined\\]\$" \
  "^${SYM}kernel::ktest::deliberate_page_fault \\(microkernel/src/ktest\\.rs:[0-9]+\\)\$" \
  "^${SYM}kernel::ktest::run \\(microkernel/src/ktest\\.rs:[0-9]+\\)\$"

boot_case ktest-stack-overflow "--cmdline ktest=stack-overflow" 1 \
  '^KERNEL PANIC on CPU 0: EXCEPTION #DF double fault \(kernel stack overflow\?\)' \
  '^  backtrace:' \
  "^${SYM}kernel::ktest::recurse \\(microkernel/src/ktest\\.rs:[0-9]+\\)\$"

# A panic on an AP stops every CPU and prints exactly one report.
boot_case ktest-ap-panic "--smp 4 --cmdline ktest=ap-panic" 1 \
  '^smp: 4 of 4 CPUs online' \
  '^KERNEL PANIC on CPU 1: deliberate panic' \
  "^${SYM}kernel::smp::on_ping \\(microkernel/src/smp\\.rs:[0-9]+\\)( \\[inlined\\])?\$" \
  '!KERNEL PANIC on CPU [02-9]'

boot_case ktest-smp4 "--smp 4 --cmdline ktest" 0 \
  '^smp: 4 of 4 CPUs online' \
  '^ktest percpu_fields_agree_on_every_cpu \.\.\. ok$' \
  '^ktest every_ap_answers_ipis \.\.\. ok$' \
  "${KTEST_COUNTS[@]}" '!PANIC'

# An AP that never arrives is reported and skipped; the rest run the suite.
boot_case ap-never-arrives "--smp 4 --cmdline 'smp.withhold=2 init=tests'" 0 \
  '^\[ *ERROR cpu0\] CPU with APIC id 2 did not come up within 1000 ms' \
  '^smp: 3 of 4 CPUs online' \
  "${TESTS_COUNTS[@]}" '!^KERNEL PANIC' '!FAILED'

# An AP that arrives after it was given up on (smp.late: the boot CPU gives up
# right after STARTUP, the AP waits in the trampoline until it has) loses the
# arrival handshake and halts; the next AP takes the next slot and CPU id, and
# the suite runs on the other three.
boot_case ap-arrives-late "--smp 4 --cmdline 'smp.late=1 init=tests'" 0 \
  '^\[ *ERROR cpu0\] CPU with APIC id 1 did not come up within 0 ms; abandoned' \
  '^smp: 3 of 4 CPUs online' \
  '^smp: APIC id 1 arrived after it was abandoned and halted' \
  "${TESTS_COUNTS[@]}" \
  '^mica: shutdown requested by init \(success\)' \
  '!^KERNEL PANIC' '!FAILED'

# The last AP arrives late, while the bring-up tables are being freed; every
# CPU that is online has its own per-CPU data and answers IPIs.
boot_case ap-arrives-late-ktest "--smp 4 --cmdline 'smp.late=3 ktest'" 0 \
  '^smp: 3 of 4 CPUs online' \
  '^smp: APIC id 3 arrived after it was abandoned and halted' \
  '^ktest percpu_fields_agree_on_every_cpu \.\.\. ok$' \
  '^ktest every_ap_answers_ipis \.\.\. ok$' \
  "${KTEST_COUNTS[@]}" '!PANIC'

# The console server (issue 11 item 4): apps/tests/src/consrv.rs's four
# sessions each print 8 lines of 300 letters in 37-byte pieces at once; every
# one of the 32 lines must be in the transcript whole (the server keeps each
# session's unfinished line until its newline), and no line holds two.
CONSRV_LINES=()
for k in 0 1 2 3; do
  letter=$(printf "\\x$(printf %x $((97 + k)))")
  for j in 0 1 2 3 4 5 6 7; do
    CONSRV_LINES+=("${SUITE}consrv-w$k-$j: ${letter}{300} end\$")
  done
done

# Ring 3 cannot speak in the kernel's voice: every line it writes, init's
# too, appears behind its pid, including forged kernel lines sent in one
# write with embedded newlines and no trailing one (the kernel ends it); a
# write that faults part-way prints nothing. The verdict is the exit status
# (only init can request a shutdown) plus kernel lines.
boot_case console-pid-prefix "--smp 2 --cmdline init=tests" 0 \
  '^\[pid 1\] Hello from userland!$' \
  '^\[pid [0-9]+\] KERNEL PANIC on CPU 0: fake$' \
  '^\[pid [0-9]+\] shutdown requested by init \(success\)$' \
  '^\[pid [0-9]+\] 0 passed, 0 failed$' \
  '^\[pid [0-9]+\] c1: x\?KERNEL PANIC on CPU 0: nel\?2K\?\?$' \
  "${SUITE}"'test user_output_cannot_forge_kernel_lines \.\.\. ok$' \
  '^mica: shutdown requested by init \(success\)$' \
  '!^KERNEL PANIC' '!^shutdown requested' '!^0 passed' '!^Hello' \
  '!PARTIAL-WRITE-LEAKED' '!FAILED' \
  "${CONSRV_LINES[@]}" \
  "${SUITE}"'consrv-restart-done$' \
  '!consrv-w.*consrv-w' '!consrv-w.*\[pid'

# A scripted shell session through the serial port (the runner feeds its
# stdin to the guest once init's servers are up; the console server echoes
# and edits the line): `helx<DEL>p` must arrive as `help` and `echo ab<BS>c`
# as `echo ac`, proving backspace was applied before the shell read the line;
# Ctrl-C drops `rm -rf` (the shell gets an interrupt, not a line).
# Then procmgr through the shell: `run hello a b` spawns hello (its line goes
# through the console; it exits with the hash of its argv, 1491904583 for
# `hello a b`), `run` of an unknown module is NotFound, `ps` lists init, the
# servers' absence (procmgr manages only what it forked, spawned or adopted)
# and the shell as init's child, and `kill 4242` (no such process) is refused.
# `run hello sleep` never ends by itself: the Ctrl-C after it (polled while
# the shell waits in the foreground) kills it. They share one line with
# `servers` and `cpus` (`;`): the console queues at most 8 input entries, and
# a shell still starting when the runner feeds could lose more.
# A Ctrl-C discards everything typed ahead and not yet read (gaps, session
# 19), so each waits (`@@wait:REGEX@@`) until the lines before it were run.
STDIN='echo hi\nhelx\x7fp\necho ab\x08c\n@@wait:\] ac$@@rm -rf\x03echo after-ctrl-c\nservers; cpus; run hello a b; run nosuch; ps; kill 4242; kill; run hello sleep\n@@wait:Hello from userland! \(argc 2,@@\x03exit\n' \
boot_case console-shell "--smp 2 --timeout 90 --cmdline init=shell" 0 \
  '^\[pid 1\] init: all servers up$' \
  '^\[pid [0-9]+\] hi$' \
  '^\[pid [0-9]+\] commands: help, echo \[words\], cpus, mem, servers, ps, run <program> \[args\], kill <pid>, tests \[prefix\], bench \[prefix\], trace, exit$' \
  '^\[pid [0-9]+\] ac$' \
  '^\[pid [0-9]+\] after-ctrl-c$' \
  '^\[pid [0-9]+\] servers: console [0-9]+ 0$' \
  '^\[pid [0-9]+\] cpus: 2 online$' \
  '^\[pid [0-9]+\] Hello from userland! \(argc 3, envc 0\)$' \
  '^\[pid [0-9]+\] run: hello \(pid [0-9]+\) exited with 1491904583$' \
  '^\[pid [0-9]+\] run: nosuch: not found$' \
  '^\[pid [0-9]+\] ps: pid ppid state cpu program$' \
  '^\[pid [0-9]+\] ps: 1 0 running - init$' \
  '^\[pid [0-9]+\] ps: [0-9]+ 1 running [01] shell$' \
  '^\[pid [0-9]+\] kill: pid 4242: not found$' \
  '^\[pid [0-9]+\] kill: usage: kill <pid>$' \
  '^\[pid [0-9]+\] Hello from userland! \(argc 2, envc 0\)$' \
  '^\[pid [0-9]+\] run: \^C: pid [0-9]+ killed$' \
  '^\[pid [0-9]+\] run: hello \(pid [0-9]+\) killed$' \
  '^\[pid [0-9]+\] shell: bye$' \
  '^mica: shutdown requested by init \(success\)$' \
  '!unknown command' '!^\[pid [0-9]+\] abc$' '!PANIC'

# The shell's `tests` and `bench` (shell3): init runs the suite and the
# benchmark program for the shell with the handles it gives them under
# init=tests / init=bench, argv[1] keeping only the names with that prefix;
# their lines come through the console, then the shell's result line. A
# prefix that matches nothing runs nothing (0 cases, passed); the end of
# the runner's input (Ctrl-D) ends the session.
STDIN='tests procmgr_getpid\nbench null_sys\ntests no_such_case\n' \
boot_case shell-programs "--smp 2 --timeout 120" 0 \
  '^\[pid [0-9]+\] tests: 1 cases matching "procmgr_getpid"$' \
  '^\[pid [0-9]+\] test procmgr_getpid_getppid \.\.\. ok$' \
  '^\[pid [0-9]+\] 1 passed, 0 failed$' \
  '^\[pid [0-9]+\] tests: passed \(exited with 0\)$' \
  '^\[pid [0-9]+\] BENCH name=null_syscall unit=(cycles|instructions) min=[0-9]+ median=[0-9]+ iters=[1-9][0-9]* ' \
  '^\[pid [0-9]+\] bench: passed \(exited with 0\)$' \
  '^\[pid [0-9]+\] tests: 0 cases matching "no_such_case"$' \
  '^\[pid [0-9]+\] shell: bye$' \
  '^mica: shutdown requested by init \(success\)$' \
  '!BENCH name=(syscall_trivial|ipc_|irq_latency)' '!FAILED' '!PANIC'

# Ctrl-C behind a typed-ahead line (gaps, session 19): while `run hello
# sleep` runs, a line is typed and then Ctrl-C. The console acts on the
# Ctrl-C when it receives it: the typed-ahead line is discarded (never
# run) and the interrupt is at the head of its queue, where the shell's
# poll (`interrupted`, which takes no line) finds it and kills hello. A
# line typed after the Ctrl-C runs once the prompt is back.
STDIN='run hello sleep\n@@wait:Hello from userland! \(argc 2,@@echo typed-ahead\n\x03@@wait:run: hello \(pid [0-9]+\) killed@@echo after\n' \
boot_case console-ctrl-c-typeahead "--smp 2 --timeout 90" 0 \
  '^\[pid [0-9]+\] Hello from userland! \(argc 2, envc 0\)$' \
  '^\[pid [0-9]+\] run: \^C: pid [0-9]+ killed$' \
  '^\[pid [0-9]+\] run: hello \(pid [0-9]+\) killed$' \
  '^\[pid [0-9]+\] after$' \
  '^\[pid [0-9]+\] shell: bye$' \
  '^mica: shutdown requested by init \(success\)$' \
  '!^\[pid [0-9]+\] typed-ahead$' '!PANIC' \
  "!^\\[pid ${PROCMGR_PID}\\] Hello from userland"

# Only the foreground reader takes a Ctrl-C (gaps2, session 20): the shell
# names itself the console's foreground reader (init made it the console's
# controller) and runs `hello steal`, which polls the console for a Ctrl-C
# every millisecond, far more often than the shell's 20 ms. The Ctrl-C must
# reach the shell (hello killed), never hello (it would say so and exit 3).
STDIN='run hello steal\n@@wait:Hello from userland! \(argc 2,@@\x03@@wait:run: hello \(pid [0-9]+\) killed@@echo after\n' \
boot_case console-ctrl-c-foreground "--smp 2 --timeout 90" 0 \
  '^\[pid [0-9]+\] run: \^C: pid [0-9]+ killed$' \
  '^\[pid [0-9]+\] run: hello \(pid [0-9]+\) killed$' \
  '^\[pid [0-9]+\] after$' \
  '^\[pid [0-9]+\] shell: bye$' \
  '^mica: shutdown requested by init \(success\)$' \
  '!took a Ctrl-C' '!refused it the foreground' '!PANIC'

# A reader that is not the foreground must not hold the console (breaku2,
# session 20): `hello lurk` leaves a forked child that outlives it waiting
# in a `read` on `console.in`, ahead of the shell's prompt `read` in the
# console's one reader thread. A Ctrl-C then typed is the shell's: the
# child's `read` must be refused at once so the shell's, queued behind it,
# takes the Ctrl-C and the line after it (before the fix the child waited
# for the foreground to take it and the shell never read again).
STDIN='run hello lurk\n@@wait:hello: lurking on console.in@@@@wait:run: hello \(pid [0-9]+\) exited with 0@@\x03echo after\n' \
boot_case console-ctrl-c-lurker "--smp 2 --timeout 60" 0 \
  '^\[pid [0-9]+\] hello: the lurker.s read was refused$' \
  '^\[pid [0-9]+\] after$' \
  '^\[pid [0-9]+\] shell: bye$' \
  '^mica: shutdown requested by init \(success\)$' \
  '!the lurker took a Ctrl-C' '!the lurker read a line' '!PANIC'

# Ctrl-C during the shell's `tests` and `bench` (gaps, session 19): init's
# program runner starts the program and the shell waits for it in steps,
# polling the console for Ctrl-C between them; on one init kills the
# program, the shell says so and its prompt comes back (`echo back`).
STDIN='tests\n@@wait:tests: [0-9]+ cases$@@\x03@@wait:tests: interrupted@@bench\n@@wait:BENCH name=@@\x03@@wait:bench: interrupted@@echo back\n' \
boot_case shell-programs-ctrl-c "--smp 2 --timeout 120" 0 \
  '^\[pid [0-9]+\] tests: \^C: stopping it$' \
  '^\[pid [0-9]+\] tests: interrupted \(killed\)$' \
  '^\[pid [0-9]+\] bench: \^C: stopping it$' \
  '^\[pid [0-9]+\] bench: interrupted \(killed\)$' \
  '^\[pid [0-9]+\] back$' \
  '^\[pid [0-9]+\] shell: bye$' \
  '^mica: shutdown requested by init \(success\)$' \
  '!tests: passed' '!bench: passed' '!^\[pid [0-9]+\] [1-9][0-9]* passed, [0-9]+ failed$' '!^KERNEL PANIC'

# The user-space suite at every CPU count the design names. Its
# ud2_faults_thread_only case faults on purpose in `do_ud2`: the kernel's line
# names the program (the boot module `tests`) and the runner symbolizes RIP
# against that program's ELF. A hand-made child image (Child::Ud2) is no boot
# module: its fault line says `(?)` and gets no symbolized line.
# Its syscall_in_last_user_page case breaks the syscall protocol on purpose:
# the kernel stops that thread with a logged syscall Fault.
# tests-smp4 runs the supervision case (apps/tests/src/supervise.rs) with 100
# kills each of the console and the loader; every other init=tests boot runs
# its default 5 of each. Its sequence-numbered lines are judged in run_case.
for n in 1 2 4 8; do
  kills=""
  [[ $n == 4 ]] && kills=" supervise.kills=100"
  boot_case "tests-smp$n" "--smp $n --cmdline 'init=tests$kills'" 0 \
    "^smp: $n of $n CPUs online" \
    '^\[pid 1\] Hello from userland!' \
    '^\[ *WARN cpu[0-9]+\] syscall fault: pid [0-9]+ tid [0-9]+: syscall return address not a user address$' \
    "${TESTS_COUNTS[@]}" \
    '^\[ *WARN cpu[0-9]+\] user fault: pid '"${SUITE_PID}"' \(tests\) tid [0-9]+ #UD invalid opcode: error=0x0 RIP=0x[0-9a-f]+ ' \
    '^\[pid '"${PROCMGR_PID}"'\] procmgr: pid [0-9]+ \(tests\) killed by fault: vector 14 \(page fault\) rip=0x[0-9a-f]+ cr2=0x0$' \
    '^\[pid '"${PROCMGR_PID}"'\] procmgr: pid [0-9]+ \(tests\) killed by fault: vector 0 \(divide error\) rip=0x[0-9a-f]+ cr2=0x0$' \
    '^\[pid '"${PROCMGR_PID}"'\] procmgr: pid [0-9]+ \(tests\) killed by fault: vector 6 \(invalid opcode\) rip=0x[0-9a-f]+ cr2=0x0$' \
    '^    at tests::faults::do_ud2 \(apps/tests/src/faults\.rs:[0-9]+\)$' \
    '^\[ *WARN cpu[0-9]+\] user fault: pid [0-9]+ \(\?\) tid [0-9]+ #UD invalid opcode: ' \
    '^mica: shutdown requested by init \(success\)' \
    '!^KERNEL PANIC' '!FAILED'
done

# Both local-APIC modes, and the plainest CPU model.
boot_case xapic-smp4 "--smp 4 --cpu qemu64,-x2apic --cmdline init=tests" 0 \
  '^smp: 4 of 4 CPUs online' \
  '^\[ *INFO cpu0\] xAPIC APIC ' \
  "${TESTS_COUNTS[@]}" '!^KERNEL PANIC' '!FAILED'

boot_case x2apic-smp4 "--smp 4 --cpu max,+x2apic --cmdline ktest" 0 \
  '^smp: 4 of 4 CPUs online' \
  '^\[ *INFO cpu0\] x2APIC APIC ' \
  "${KTEST_COUNTS[@]}" '!PANIC'

# UEFI (OVMF, through GRUB's EFI build on the same hybrid ISO) and the q35
# machine: the user-space suite at 4 CPUs, and the kernel names the firmware
# it found in the multiboot2 tags. User lines carry the kernel's `[pid N] ` prefix.
# OVMF adds ~5 s under TCG on a lightly loaded host and 10+ s on a busy one.
# The suite case keeps the default limit (SMOKE_TIMEOUT, 240 s): it takes
# ~75 s beside one other case, but a CI run on a host busy with a second
# suite timed it out at 120 s two-thirds of the way through (stop 19).
boot_case uefi-tests-smp4 "--firmware uefi --smp 4 --cmdline init=tests" 0 \
  '^\[ *INFO cpu0\] firmware: UEFI \(from the multiboot2 tags\); memory map from the multiboot2 memory-map tag; ACPI RSDP from the multiboot2 tag' \
  '^smp: 4 of 4 CPUs online' \
  '^\[pid [0-9]+\] Hello from userland!' \
  "${TESTS_COUNTS[@]}" \
  '^mica: shutdown requested by init \(success\)' \
  '!^KERNEL PANIC' '!FAILED'

boot_case q35-tests-smp4 "--machine q35 --smp 4 --cmdline init=tests" 0 \
  '^\[ *INFO cpu0\] firmware: BIOS \(from the multiboot2 tags\)' \
  '^smp: 4 of 4 CPUs online' \
  '^\[pid [0-9]+\] Hello from userland!' \
  "${TESTS_COUNTS[@]}" \
  '^mica: shutdown requested by init \(success\)' \
  '!^KERNEL PANIC' '!FAILED'

boot_case uefi-q35 "--firmware uefi --machine q35 --smp 2 --timeout 120" 0 \
  '^\[ *INFO cpu0\] firmware: UEFI \(from the multiboot2 tags\)' \
  '^smp: 2 of 2 CPUs online' \
  '^\[pid [0-9]+\] Hello from userland!' \
  '^\[pid [0-9]+\] shell: bye$' \
  '^mica: shutdown requested by init \(success\)$' \
  '!^KERNEL PANIC' '!user fault'

# The kernel tests on the plainest CPU (no SMEP/SMAP/UMIP): the CPU-state
# checks must hold there too.
boot_case ktest-qemu64 "--smp 2 --cpu qemu64 --cmdline ktest" 0 \
  '^smp: 2 of 2 CPUs online' \
  '^ktest cpu_state_is_explicit_on_every_cpu \.\.\. ok$' \
  "${KTEST_COUNTS[@]}" '!PANIC'

# The user-space suite while CPU 0 sends every other CPU an NMI on each tick:
# NMIs in ring 3 are never the thread's fault, and nothing breaks under them.
boot_case nmi-storm-smp4 "--smp 4 --cmdline 'init=tests nmi.storm=1'" 0 \
  '^smp: 4 of 4 CPUs online' \
  '^nmi\.storm: [0-9]+ NMIs taken in ring 3 so far, no thread blamed' \
  "${SUITE}"'test nmi_in_ring3_leaves_threads_intact \.\.\. ok' \
  "${TESTS_COUNTS[@]}" \
  '^mica: shutdown requested by init \(success\)' \
  '!^KERNEL PANIC' '!FAILED'

# A stray NMI (a watchdog, a hardware report) on the CPU that is stopping
# the machine is counted and ignored there: the power-off or the panic
# report goes on (break21: the NMI handler halted the reporter as a
# stopped CPU, and the boot hung until the timeout). `nmi.atstop=1` makes
# that CPU NMI itself right after it stopped the others.
boot_case nmi-at-power-off "--smp 2 --timeout 30 --cmdline 'init=none nmi.atstop=1'" 0 \
  '^nmi\.atstop: ' \
  '^mica: init ended \(Exited\(0\)\); powering off' \
  '!PANIC'
boot_case nmi-at-panic "--smp 2 --timeout 30 --cmdline 'ktest=ap-panic nmi.atstop=1'" 1 \
  '^nmi\.atstop: ' \
  '^KERNEL PANIC on CPU 1: deliberate panic' \
  '^  backtrace:' \
  '!KERNEL PANIC on CPU 0'
# A power-off that stops a CPU in the middle of a kernel line (its serial
# lock broken) starts its own line on a line of its own (break21: it was
# glued to the stopped CPU's half line, and `^mica: ` did not match).
# `stop.midline=1` makes another CPU hold the serial lock mid-line first.
boot_case midline-at-power-off "--smp 2 --timeout 30 --cmdline 'init=none stop.midline=1'" 0 \
  '^stop\.midline: CPU [0-9]+ stopped mid-line' \
  '^mica: init ended \(Exited\(0\)\); powering off' \
  '!PANIC'

# The syscall fuzzer, bounded: a fixed seed, 50000 random syscalls over 8
# threads on 4 CPUs, then the hazards and storms and the leak check, with every
# category on. Longer runs: scripts/fuzz.sh.
boot_case fuzz-smp4 "--smp 4 --timeout 120 --cmdline 'init=fuzz fuzz.seed=1 fuzz.iters=50000 log=error'" 0 \
  '^\[pid [0-9]+\] fuzz: seed=1 syscalls=50000 faults=[0-9]+ ok$' \
  '^mica: shutdown requested by init \(success\)' \
  '!^KERNEL PANIC' '!FINDING'

# The kernel trace (issue 12 part 4; runner --trace, src/trace.rs): the suite at
# four CPUs with every category but `irq` on (the timer's entries and exits,
# about 7,000 of the last 16,384 records, would push the IPC out of the rings:
# the flows this case asks for need a call and its reply both kept). The runner
# folds the TRACE frames out of the transcript, writes the Chrome trace-event
# JSON and reads it back against the format (valid JSON, required fields, time
# order per track, nested slices, both ends of every flow); the line it prints
# says so and counts the CPUs with events.
# init marks each server restart (`restart:<name>`, init/src/names.rs
# trace_restart): the suite's last case restarts the console and the loader,
# so their marks are still in the rings at shutdown.
boot_case trace-tests-smp4 "--smp 4 --cmdline 'init=tests trace=ipc,sched,fault,proc,syscall,mark' --trace \$OUT/trace-tests-smp4.json" 0 \
  "${TESTS_COUNTS[@]}" \
  'json:"name":"mark restart:console"' 'json:"name":"mark restart:loader"' \
  '^mica: trace: wrote .*/trace-tests-smp4\.json \([0-9]+ events, [1-9][0-9]* flows; CPUs with events 4/4; [0-9]+ frame lines, 0 bad, .*\); validated$' \
  '!^TRACE ' '!^KERNEL PANIC' '!FAILED'

# The shell's `trace` (shell3): init's `trace_dump` (a syscall only init
# may make; the tests' trace_dump_is_init_only checks the refusal) prints
# the rings in the same framed encoding as at shutdown, while the system
# runs; the runner decodes them into the JSON. Once per boot: the second
# `trace` is told so, and the shutdown dump prints nothing more.
# The frameless IPC entry tests the trace categories once (ipccut): with
# any of syscall, ipc or sched on, the call goes to the traced handler, so
# `trace=ipc` alone still records the fast path's events. The bench's
# 10,000 same-core round trips fill the ring with call/reply flows; with
# the entry testing `syscall` only, the run recorded 52 events, 0 flows.
STDIN='bench ipc_call_same_core_fpu\ntrace\n' \
boot_case trace-ipc-fast-path "--smp 1 --cmdline trace=ipc --trace \$OUT/trace-ipc-fast-path.json" 0 \
  '^\[pid [0-9]+\] BENCH name=ipc_call_same_core_fpu .* failed=0$' \
  '^mica: trace: wrote .*/trace-ipc-fast-path\.json \([0-9]+ events, [1-9][0-9]{3,} flows; .*\); validated$' \
  '^mica: shutdown requested by init \(success\)$' \
  '!^TRACE ' '!PANIC' '!dump was cut short'

STDIN='run hello a\ntrace\ntrace\n' \
boot_case shell-trace "--smp 2 --cmdline trace=on --trace \$OUT/shell-trace.json" 0 \
  '^\[pid [0-9]+\] trace: [1-9][0-9]* record lines dumped$' \
  '^\[pid [0-9]+\] trace: the rings were dumped already \(once per boot\)$' \
  '^mica: trace: wrote .*/shell-trace\.json \([1-9][0-9]* events, .*CPUs with events 2/2; .*\); validated$' \
  '^mica: shutdown requested by init \(success\)$' \
  '!^TRACE ' '!PANIC' '!dump was cut short'

# A kernel panic dumps the rings too (no lock, no allocation): CPU 1's ring
# holds the ping that made it panic.
boot_case trace-panic "--smp 2 --cmdline ktest=ap-panic --trace \$OUT/trace-panic.json" 1 \
  '^KERNEL PANIC on CPU 1: deliberate panic' \
  '^mica: trace: wrote .*/trace-panic\.json \([1-9][0-9]* events, .*\); validated$' \
  '!^TRACE ' '!dump was cut short'

# --- machinery ------------------------------------------------------------------------
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-240}
SMOKE_JOBS=${SMOKE_JOBS:-2}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
RUNNER=${SMOKE_RUNNER:-$TARGET_DIR/debug/mica}
OUT=$TARGET_DIR/smoke

usage() {
  sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
}

# Prints one block of output without interleaving with other cases' blocks.
emit() {
  if command -v flock >/dev/null 2>&1; then
    { flock 9; printf '%s\n' "$1"; } 9>"$OUT/.lock"
  else
    printf '%s\n' "$1"
  fi
}

describe_exit() {
  case $1 in
    0) echo "0 (guest success)" ;;
    1) echo "1 (guest failure)" ;;
    2) echo "2 (usage error)" ;;
    3) echo "3 (reset/triple fault)" ;;
    124) echo "124 (timeout)" ;;
    137) echo "137 (killed by the harness's outer timeout)" ;;
    *) echo "$1" ;;
  esac
}

# feed_input TEXT RAW DEADLINE: prints TEXT (printf %b) to stdout, stopping
# at each `@@wait:REGEX@@` until a line of the transcript RAW (CRs removed)
# matches REGEX or SECONDS passes DEADLINE (then the rest is fed anyway, and
# the case's own checks fail). Always succeeds: a runner that ended early
# closed the pipe, which is not the case's verdict (its exit status is).
feed_input() (
  trap '' PIPE
  local text=$1 raw=$2 deadline=$3 re
  while [[ $text == *@@wait:* ]]; do
    printf '%b' "${text%%@@wait:*}" 2>/dev/null || exit 0
    text=${text#*@@wait:}
    re=${text%%@@*}
    text=${text#*@@}
    until tr -d '\r' <"$raw" | grep -qE -- "$re"; do
      ((SECONDS < deadline)) || break
      sleep 0.2
    done
  done
  printf '%b' "$text" 2>/dev/null || true
)

# Runs one case; writes PASS/FAIL to $OUT/NAME.status and prints the verdict.
run_case() {
  local name=$1
  local log=$OUT/$name.log raw=$OUT/$name.raw
  local -a args
  eval "args=(${CASE_ARGS[$name]})"

  # The runner enforces the per-case timeout; `timeout` is only a backstop.
  local limit=$SMOKE_TIMEOUT i
  for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
      --timeout) limit=${args[i + 1]:-$limit} ;;
      --timeout=*) limit=${args[i]#--timeout=} ;;
    esac
  done

  # --repeat runs: their own logs, in icount mode.
  if [[ -n $RUN_SUFFIX ]]; then
    log=$OUT/$name$RUN_SUFFIX.log raw=$OUT/$name$RUN_SUFFIX.raw
    args+=(--icount)
  fi
  local rec=""
  if [[ ${CASE_KIND[$name]} == record-replay ]]; then
    rec=$OUT/$name$RUN_SUFFIX.rec
  elif [[ $RECORD_FAILURES == 1 ]] && recordable "${args[@]}"; then
    rec=$OUT/recordings/$name
  fi
  if [[ -n $rec ]]; then
    rm -rf "$rec"
    mkdir -p "$(dirname "$rec")"
    args+=(--record "$rec")
  fi

  local start=$EPOCHREALTIME status=0
  # STDIN='...' boot_case: printf-%b text fed to the guest's serial port (the
  # runner sends it once init says all servers are up); else no input. Text
  # with `@@wait:REGEX@@` marks is fed piece by piece through a pipe: each
  # mark holds the rest back until a transcript line matches REGEX.
  local input=/dev/null
  if [[ -n ${CASE_STDIN[$name]} ]]; then
    input=$OUT/$name$RUN_SUFFIX.stdin
    printf '%b' "${CASE_STDIN[$name]}" >"$input"
  fi
  if [[ ${CASE_STDIN[$name]} == *@@wait:* ]]; then
    : >"$raw"
    feed_input "${CASE_STDIN[$name]}" "$raw" $((SECONDS + limit + 30)) |
      timeout --kill-after=5 $((limit + 30)) \
        "$RUNNER" --headless --timeout "$SMOKE_TIMEOUT" "${args[@]}" \
        >"$raw" 2>&1 || status=$?
  else
    timeout --kill-after=5 $((limit + 30)) \
      "$RUNNER" --headless --timeout "$SMOKE_TIMEOUT" "${args[@]}" \
      <"$input" >"$raw" 2>&1 || status=$?
  fi
  local rstatus=""
  if [[ ${CASE_KIND[$name]} == record-replay && -f $rec/manifest ]]; then
    rstatus=0
    timeout --kill-after=5 $((limit + 30)) \
      "$RUNNER" --headless --timeout "$limit" --replay "$rec" \
      </dev/null >"$OUT/$name.replay.log" 2>&1 || rstatus=$?
  fi
  local secs
  secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  # Judge a plain-text copy: no CRs, no terminal escapes (GRUB draws its menu with them).
  sed -E $'s/\x1b\\[[0-9;?]*[A-Za-z]//g; s/\x1b[()][A-Z0-9]//g; s/\r//g' "$raw" >"$log"
  rm -f "$raw"

  local reasons=() check
  # (EXPECTED_EXIT may list alternatives: '0|1'.)
  if ! [[ $status =~ ^(${CASE_EXIT[$name]})$ ]]; then
    reasons+=("exit $(describe_exit "$status"), expected $(describe_exit "${CASE_EXIT[$name]}")")
  fi
  local -a checks=()
  IFS=$'\x1f' read -r -a checks <<<"${CASE_CHECKS[$name]}" || true
  # The file the case's `--trace` wrote (for `json:REGEX` checks).
  local json=""
  for ((i = 0; i < ${#args[@]}; i++)); do
    [[ ${args[i]} == --trace ]] && json=${args[i + 1]:-}
  done
  for check in "${checks[@]}"; do
    if [[ $check == json:* ]]; then
      if [[ -z $json || ! -f $json ]] || ! grep -Eq -e "${check#json:}" "$json"; then
        reasons+=("missing /${check#json:}/ in the trace JSON ${json:-(no --trace)}")
      fi
    elif [[ $check == '!'* ]]; then
      local line
      if line=$(grep -E -m1 -e "${check#!}" "$log"); then
        reasons+=("unexpected /${check#!}/: $line")
      fi
    elif ! grep -Eq -e "$check" "$log"; then
      reasons+=("missing /$check/")
    fi
  done

  # apps/tests/src/supervise.rs's sequence-numbered lines (any init=tests
  # transcript): each exactly once, lost only if its writer was told so.
  local seq
  if grep -q 'svq-w' "$log" && ! seq=$(scripts/check-supervise-seq.sh "$log"); then
    while IFS= read -r check; do reasons+=("$check"); done <<<"$seq"
  fi

  if [[ ${CASE_KIND[$name]} == record-replay ]]; then
    if [[ -z $rstatus ]]; then
      reasons+=("the recording left no $rec/manifest")
    elif [[ $rstatus != "$status" ]]; then
      reasons+=("replay exit $(describe_exit "$rstatus"), the recording's $(describe_exit "$status") (see $OUT/$name.replay.log)")
    elif ! cmp -s "$rec/serial.log" "$rec/replay-serial.log"; then
      local first
      first=$(cmp "$rec/serial.log" "$rec/replay-serial.log" 2>&1 | head -n 1) || true
      reasons+=("the replay's serial transcript differs from the recording's: $first")
    fi
  fi

  if [[ ${#reasons[@]} -eq 0 ]]; then
    echo PASS >"$OUT/$name$RUN_SUFFIX.status"
    [[ ${CASE_KIND[$name]} == record-replay || -z $rec ]] || rm -rf "$rec"
    emit "PASS $name (${secs}s)"
  else
    echo FAIL >"$OUT/$name$RUN_SUFFIX.status"
    local block="FAIL $name: ${reasons[0]}" r
    for r in "${reasons[@]:1}"; do block+=$'\n'"     also: $r"; done
    block+=$'\n'"  runner: mica --headless --timeout $SMOKE_TIMEOUT ${args[*]} (${secs}s)"
    if [[ -n $rec && -f $rec/manifest ]]; then
      block+=$'\n'"  recording: $rec (replay: $RUNNER --replay $rec [--gdb])"
    fi
    block+=$'\n'"  last 20 lines of $log:"
    block+=$'\n'"$(tail -n 20 "$log" | sed 's/^/    | /')"
    emit "$block"
  fi
}

# Whether runner ARGS can be recorded: one CPU, BIOS (the runner's --record
# refuses the rest).
recordable() {
  local i a=("$@")
  for ((i = 0; i < ${#a[@]}; i++)); do
    case ${a[i]} in
      --smp) [[ ${a[i + 1]} == 1 ]] || return 1 ;;
      --smp=*) [[ ${a[i]#--smp=} == 1 ]] || return 1 ;;
      --firmware) [[ ${a[i + 1]} == bios ]] || return 1 ;;
      --firmware=uefi) return 1 ;;
    esac
  done
  return 0
}

# Every check a case requires must be anchored at the start of a line (`^`) and
# not begin with a wildcard: user output always starts with `[pid N] `, so an
# anchored regex can be met by a user line only if it names the pid prefix
# itself. An unanchored one (`xAPIC APIC`) is met by any process that prints
# those words. Kernel log lines are `[LEVEL cpuN] ...`: anchor on that.
lint_checks() {
  local name check bad=0
  for name in "${CASES[@]}"; do
    local -a checks=()
    IFS=$'\x1f' read -r -a checks <<<"${CASE_CHECKS[$name]}" || true
    for check in "${checks[@]}"; do
      # (json: checks read the --trace file, not the transcript)
      [[ $check == '!'* || $check == json:* ]] && continue
      if [[ $check != '^'* || $check == '^.'* || $check == '^('* ]]; then
        echo "smoke: case $name: /$check/ is not anchored at a line start (a user line could meet it)" >&2
        bad=1
      fi
    done
  done
  return $bad
}

# --- main -----------------------------------------------------------------------------
selected=()
REPEAT=0 RECORD_FAILURES=0 RUN_SUFFIX=""
names=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --repeat)
      REPEAT=${2:-}
      [[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "smoke: --repeat needs a count" >&2; exit 2; }
      shift ;;
    --repeat=*) REPEAT=${1#--repeat=}
      [[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "smoke: --repeat needs a count" >&2; exit 2; } ;;
    --record-failures) RECORD_FAILURES=1 ;;
    *) names+=("$1") ;;
  esac
  shift
done
if [[ $REPEAT -gt 0 && ${#names[@]} -eq 0 ]]; then
  echo "smoke: --repeat N needs the cases to repeat" >&2
  exit 2
fi
set -- "${names[@]+"${names[@]}"}"
for arg in "$@"; do
  case $arg in
    -h | --help) usage; exit 0 ;;
    --list) printf '%s\n' "${CASES[@]}"; exit 0 ;;
    --lint) lint_checks && echo "smoke: every required check is anchored"; exit $? ;;
    -*) echo "smoke: unknown option $arg" >&2; usage >&2; exit 2 ;;
  esac
  matched=0
  for name in "${CASES[@]}"; do
    # shellcheck disable=SC2053  # $arg is a glob on purpose
    if [[ $name == $arg ]]; then
      selected+=("$name")
      matched=1
    fi
  done
  if [[ $matched -eq 0 ]]; then
    echo "smoke: no case matches '$arg' (scripts/smoke.sh --list)" >&2
    exit 2
  fi
done
[[ $# -gt 0 ]] || selected=("${CASES[@]}")

if ! lint_checks; then
  echo "FAIL lint: the case table has unanchored checks"
  echo "0 passed, ${#selected[@]} failed"
  exit 1
fi
mkdir -p "$OUT"
if [[ ${SMOKE_NO_BUILD:-0} != 1 ]]; then
  echo "smoke: cargo build"
  if ! cargo build; then
    echo "FAIL build: cargo build failed"
    echo "0 passed, ${#selected[@]} failed"
    exit 1
  fi
fi
if [[ ! -x $RUNNER ]]; then
  echo "FAIL setup: runner $RUNNER not found"
  echo "0 passed, ${#selected[@]} failed"
  exit 1
fi

if [[ $REPEAT -gt 0 ]]; then
  # Each case N times in icount mode (sequentially within a case, SMOKE_JOBS
  # runs at a time); the tally says how often it failed.
  echo "smoke: ${#selected[@]} case(s) x $REPEAT in icount mode (runner --icount); transcripts in $OUT/<case>.run<i>.log"
  total_failed=0
  declare -A done_case=()
  for name in "${selected[@]}"; do
    [[ -z ${done_case[$name]+x} ]] || continue
    done_case[$name]=1
    running=0
    for ((r = 1; r <= REPEAT; r++)); do
      rm -f "$OUT/$name.run$r.status"
      RUN_SUFFIX=.run$r run_case "$name" &
      running=$((running + 1))
      if [[ $running -ge $SMOKE_JOBS ]]; then
        wait -n || true
        running=$((running - 1))
      fi
    done
    wait || true
    fails=0
    for ((r = 1; r <= REPEAT; r++)); do
      [[ $(cat "$OUT/$name.run$r.status" 2>/dev/null) == PASS ]] || fails=$((fails + 1))
    done
    echo "repeat $name: failed $fails of $REPEAT runs (icount mode)"
    total_failed=$((total_failed + fails))
  done
  echo "$(( ${#done_case[@]} * REPEAT - total_failed )) passed, $total_failed failed"
  [[ $total_failed -eq 0 ]]
  exit
fi

if [[ $RECORD_FAILURES == 1 ]]; then
  echo "smoke: --record-failures: single-CPU BIOS cases run under record/replay; failing ones keep their recording in $OUT/recordings/<case>"
fi
echo "smoke: ${#selected[@]} case(s), $SMOKE_JOBS at a time, ${SMOKE_TIMEOUT}s each; transcripts in $OUT/"
declare -A seen=()
running=0
for name in "${selected[@]}"; do
  [[ -z ${seen[$name]+x} ]] || continue
  seen[$name]=1
  rm -f "$OUT/$name.status"
  run_case "$name" &
  running=$((running + 1))
  if [[ $running -ge $SMOKE_JOBS ]]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

passed=0 failed=0
for name in "${!seen[@]}"; do
  if [[ $(cat "$OUT/$name.status" 2>/dev/null) == PASS ]]; then
    passed=$((passed + 1))
  else
    [[ -f $OUT/$name.status ]] || echo "FAIL $name: the harness lost this case"
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
