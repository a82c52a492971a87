# Generated from protos/ by scripts/gen_protos.sh. Do not edit.
