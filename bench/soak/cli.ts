/** The soaks' command-line flags (soak.ts, cluster-soak.ts): test/support/cli-flags.ts's. */
export { flag } from "../../test/support/cli-flags.ts";
