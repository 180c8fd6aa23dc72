// Command kstatus reads Kubernetes objects as JSON (one per line on stdin) and prints, one JSON line each,
// the status computed by the kstatus library Flux uses for health checks (github.com/fluxcd/cli-utils,
// pkg/kstatus/status.Compute) and by its upstream (sigs.k8s.io/cli-utils):
// {"status": "InProgress|Current|Failed|...", "message": "...", "upstream": {"status": ..., "message": ...}}.
// Built by hack/kstatus/build.sh; run by tests/unit/test_kstatus.py.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	upstream "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

type result struct {
	verdict
	Upstream verdict `json:"upstream"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		obj := &unstructured.Unstructured{}
		var r result
		if err := obj.UnmarshalJSON(in.Bytes()); err != nil { // integers as int64, as from the apiserver
			r.Error = err.Error()
		} else {
			if res, err := status.Compute(obj); err != nil {
				r.Error = err.Error()
			} else {
				r.Status, r.Message = res.Status.String(), res.Message
			}
			if res, err := upstream.Compute(obj); err != nil {
				r.Upstream.Error = err.Error()
			} else {
				r.Upstream.Status, r.Upstream.Message = res.Status.String(), res.Message
			}
		}
		if err := out.Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
