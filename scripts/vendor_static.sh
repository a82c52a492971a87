#!/bin/sh
# Install the dashboard's front-end libraries from package-lock.json and copy
# the files the pages load into static/vendor/ (served by whitenoise; no CDN).
set -eu
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund --ignore-scripts
mkdir -p static/vendor
cp node_modules/chart.js/dist/chart.umd.min.js static/vendor/chart.umd.min.js
cp node_modules/chart.js/LICENSE.md static/vendor/chart.js.LICENSE.md
echo "static/vendor: $(ls static/vendor | tr '\n' ' ')"
