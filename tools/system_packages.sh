#!/usr/bin/env bash
# What the tests use besides Python: gcc and make (the tests that rebuild the
# kernel and patches) and gdb (the tests that drive it against `lab trace
# gdb`).  Installs what is missing when it can (root with apt-get); else says
# in one line what is missing, what it costs and how to install it.  Never
# fails: without them those tests are skipped, the others run.
missing=()
for tool in gcc make gdb; do
	command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
	echo "installing ${missing[*]} (apt-get) for the tests that need them"
	if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1; then
		exit 0
	fi
	echo "lab: could not install ${missing[*]} with apt-get; the tests that need them are skipped"
	exit 0
fi
echo "lab: ${missing[*]} not installed; the tests that need them are skipped (install with your package manager, e.g. sudo apt-get install ${missing[*]})"
exit 0
