/** IPV6: this machine has an IPv6 loopback to listen on (a container may not): tests that need one skip without it. */
export const IPV6 = (() => {
  try {
    Bun.listen({ hostname: "::1", port: 0, socket: { data() {} } }).stop(true);
    return true;
  } catch {
    return false;
  }
})();
