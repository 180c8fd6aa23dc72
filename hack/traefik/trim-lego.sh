#!/usr/bin/env bash
# trim-lego.sh SRC DST: copy the lego module SRC (from the module cache) to DST without the ACME DNS-01
# providers whose SDKs the Go module proxy refuses ("This module version is not available": akamai edgegrid v13,
# huaweicloud-sdk-go-v3, nrdcg/oci-go-sdk, sacloud-sdk-go, ucloud-sdk-go, yandex-cloud go-sdk/services/dns).
# The only source change of the Traefik build: each provider's directory goes, and so do its import and its
# `case` in lego's generated provider factory (providers/dns/zz_gen_dns_providers.go), so asking Traefik for one
# of them is "unrecognized DNS provider" instead of a build failure. Checks that each edit matched.
set -euo pipefail
src="$1" dst="$2"
refused=(edgedns huaweicloud oraclecloud sakuracloud ucloud yandexcloud)

rm -rf "$dst"
cp -r "$src" "$dst"
chmod -R u+w "$dst"
gen="$dst/providers/dns/zz_gen_dns_providers.go"
for p in "${refused[@]}"; do
    [[ -d "$dst/providers/dns/$p" ]] || { echo "trim-lego.sh: no provider $p in $src" >&2; exit 1; }
    rm -rf "$dst/providers/dns/$p"
    grep -q "^	\"github.com/go-acme/lego/v5/providers/dns/$p\"\$" "$gen" \
        || { echo "trim-lego.sh: no import of $p in $gen" >&2; exit 1; }
    grep -q "^		return $p.NewDNSProvider()\$" "$gen" \
        || { echo "trim-lego.sh: no case for $p in $gen" >&2; exit 1; }
    # The import line; the case line just before `return P.NewDNSProvider()` and that return.
    sed -i -e "\#^	\"github.com/go-acme/lego/v5/providers/dns/$p\"\$#d" \
        -e "/^	case .*:\$/{N;/\n		return $p.NewDNSProvider()\$/d}" "$gen"
done
# Nothing of them left (a test file may name them; tests are not built).
if grep -rlE "providers/dns/($(IFS='|'; echo "${refused[*]}"))\"" "$dst" --include='*.go' | grep -v '_test.go$'; then
    echo "trim-lego.sh: a trimmed provider is still imported (above)" >&2
    exit 1
fi
