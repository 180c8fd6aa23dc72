// Command etcd is etcd's server, as etcd's own main builds it (go.etcd.io/etcd/server/v3's main.go): every
// argument goes to etcdmain. The version is the server module's, pinned in go.mod here. Built by
// hack/etcd/build.sh; run by devenv.localenv.controlplane, which prefers it to Debian's etcd 3.4.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
