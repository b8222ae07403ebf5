//go:build !(linux && (amd64 || arm64))

package prefault

type watcher struct{}

func newWatcher() (*watcher, bool) { return nil, false }

func (*watcher) step() (grew, ok bool) { return false, false }
