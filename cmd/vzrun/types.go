package main

import specs "github.com/opencontainers/runtime-spec/specs-go"

type specsProcess = specs.Process
