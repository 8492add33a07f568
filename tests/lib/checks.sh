# shellcheck shell=bash
# The pass/fail bookkeeping shared by the shell test suites (tests/packaging.sh, tests/e2e/run.sh):
# each check prints one "ok   - …" or "FAIL - …" line and the suite ends with "N passed, N failed".
# Sourced, not run; it knows nothing about what is being checked.

pass=0
fail=0

ok() {
    echo "ok   - $*"
    pass=$((pass + 1))
}

nok() {
    echo "FAIL - $*"
    fail=$((fail + 1))
}

# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else nok "$what"; fi
}

# wait_until SECONDS COMMAND...: runs the command every 50 ms until it succeeds (status 0) or
# SECONDS have passed (status 1). The deadline is a guard against hanging, not a measurement.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

# equals VALUE COMMAND... / at_least NUMBER COMMAND...: whether the command's output is VALUE (is
# at least NUMBER). Conditions for wait_until, which must re-run the command on every try.
equals() {
    local want=$1
    shift
    test "$("$@")" = "$want"
}
at_least() {
    local want=$1 got
    shift
    got=$("$@") && test "$got" -ge "$want" 2>/dev/null
}

# summary: the closing line; the status is non-zero when any check failed.
summary() {
    echo "$pass passed, $fail failed"
    [ "$fail" = 0 ]
}
