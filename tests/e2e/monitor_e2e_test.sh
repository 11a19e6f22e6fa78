#!/usr/bin/env bash
echo "monitor_e2e_test: not written yet" >&2
exit 1
