// Command vz-agent is PID 1 in every vzrun VM; see package agent.
package main

import "github.com/vzrun/vzrun/agent"

func main() { agent.Main() }
