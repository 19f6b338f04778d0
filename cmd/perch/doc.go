// Command perch is the one binary of Perch: `perch dev` runs the whole system on one machine,
// `perch core` and `perch edge` are the production roles, `perch migrate` prepares a database,
// `perch keys` creates, lists and revokes the apps' API keys in it.
// See DESIGN §4 for the contract of every subcommand.
package main
