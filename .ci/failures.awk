# Prints each failing test's error from deno test's "ERRORS" section, short: the test's
# line, then its message (its first lines and its last ones when long; stack frames
# left out). An error whose message was already printed is named, not repeated.
# Usage: awk -f .ci/failures.awk LOG
function flush(   text, i) {
  if (header == "") return
  text = ""
  for (i = 1; i <= count; i++) text = text lines[i] "\n"
  print header
  if (text in seen) {
    print "  (the same error as: " seen[text] ")"
  } else {
    seen[text] = header
    for (i = 1; i <= count; i++) {
      if (count > HEAD + TAIL && i == HEAD + 1) {
        print "  [" (count - HEAD - TAIL) " lines left out]"
        i = count - TAIL + 1
      }
      print "  " lines[i]
    }
  }
  header = ""
  count = 0
}
BEGIN { HEAD = 6; TAIL = 12; inside = 0; header = ""; count = 0; stack = 0 }
/^ ERRORS $/ { inside = 1; next }
/^ FAILURES $/ { if (inside) flush(); inside = 0; next }
!inside { next }
/ => \.\/.*:[0-9]+:[0-9]+$/ { flush(); header = $0; stack = 0; next }
/^    at / { stack = 1; next }
header != "" && !stack && $0 != "" { lines[++count] = $0 }
END { if (inside) flush() }
