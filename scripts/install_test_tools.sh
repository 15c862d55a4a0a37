#!/usr/bin/env bash
# Installs optional tools some tests use; every such test skips cleanly when its tool is missing,
# so this script never fails the run. Called by scripts/test.sh with the venv's python as $1.
#
#   Chromium (headless): renders `fastckpt diff --html` reports in tests/test_diff_cli.py and
#     `fastckpt report --html` pages in tests/test_report_html.py.
#   safetensors (pip, in the venv): cross-format diff tests (.pt vs .safetensors).
py="${1:-python3}"

have_browser() {
  for b in chromium chromium-browser google-chrome google-chrome-stable chrome headless_shell; do
    command -v "$b" >/dev/null 2>&1 && return 0
  done
  return 1
}

if have_browser; then
  :
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing chromium for the HTML report tests (apt-get)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; then
    echo "note: could not install chromium with apt-get; the browser tests will be skipped"
  fi
else
  echo "note: no chromium found and not root with apt-get; the browser tests will be skipped"
fi

if ! "$py" -c "import safetensors" >/dev/null 2>&1; then
  "$py" -m pip install --quiet safetensors >/dev/null 2>&1 ||
    echo "note: could not pip install safetensors; the cross-format tests will be skipped"
fi
exit 0
