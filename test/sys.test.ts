/**
 * The native calls' structures against the C compiler's on this machine:
 * the control message that carries a fd (cmsghdr, CMSG_LEN, CMSG_SPACE,
 * CMSG_DATA) and struct msghdr. A layout that does not match would pass fds
 * in malformed messages. Needs a C compiler (`cc`); skipped without one.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFileSync, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Sys from "../src/internal/sys.ts"

const hasCompiler = spawnSync("cc", ["--version"]).status === 0

const program = `
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
int main(void) {
  char buf[CMSG_SPACE(sizeof(int))];
  struct msghdr msg = { .msg_control = buf, .msg_controllen = sizeof buf };
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  printf("{\\"word\\":%zu,\\"level\\":%zu,\\"type\\":%zu,\\"data\\":%zu,\\"length\\":%zu,\\"space\\":%zu,\\"msghdr\\":%zu}\\n",
    sizeof(size_t), offsetof(struct cmsghdr, cmsg_level), offsetof(struct cmsghdr, cmsg_type),
    (size_t)((unsigned char *)CMSG_DATA(c) - (unsigned char *)c), (size_t)CMSG_LEN(sizeof(int)),
    (size_t)CMSG_SPACE(sizeof(int)), sizeof(struct msghdr));
  return 0;
}
`

/** What C says here: compiled and run once. */
const fromC = () => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-grace-layout-"))
  try {
    Fs.writeFileSync(Path.join(dir, "layout.c"), program)
    execFileSync("cc", ["-o", Path.join(dir, "layout"), Path.join(dir, "layout.c")])
    return JSON.parse(execFileSync(Path.join(dir, "layout"), { encoding: "utf8" })) as Record<string, number>
  } finally {
    Fs.rmSync(dir, { recursive: true, force: true })
  }
}

describe("the native structures", () => {
  it.skipIf(!hasCompiler || Sys.layouts() === undefined)("match the C compiler's on this machine", () => {
    const c = fromC()
    const { control, messageHeaderSize } = Sys.layouts()!
    assert.deepStrictEqual(
      { ...control, msghdr: messageHeaderSize },
      { word: c.word, level: c.level, type: c.type, data: c.data, length: c.length, space: c.space, msghdr: c.msghdr }
    )
  })

  it("on a 32-bit machine: a 12-byte cmsghdr, the fd at 12, 16 bytes in all (glibc's and musl's i386 and arm)", () => {
    assert.deepStrictEqual(Sys.controlLayout(4), { word: 4, level: 4, type: 8, data: 12, length: 16, space: 16 })
    assert.deepStrictEqual(Sys.controlLayout(8), { word: 8, level: 8, type: 12, data: 16, length: 20, space: 24 })
  })
})
