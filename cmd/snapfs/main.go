// Command snapfs manages disk snapshot chains and serves them through FUSE.
package main

func main() {}
