module mvds-node.test/interop/vacp2p-v0.0.25

go 1.23

require (
	github.com/golang/protobuf v1.5.0
	github.com/vacp2p/mvds v0.0.25
	google.golang.org/protobuf v1.36.12
)

require (
	go.uber.org/atomic v1.4.0 // indirect
	go.uber.org/multierr v1.1.0 // indirect
	go.uber.org/zap v1.10.0 // indirect
)
