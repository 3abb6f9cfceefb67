#!/bin/sh
# Builds (or reuses) the QEMU guest image used by the end-to-end tests.
# Placeholder until the guest builder lands: nothing to build yet.
exit 0
