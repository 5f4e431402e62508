import { configDefaults, defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The package test has its own config and script (`npm run test:package`).
    exclude: [...configDefaults.exclude, "test/package/**"],
    // Integration tests spawn real processes and bind real sockets: give them room, but every wait in them is bounded.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ["default", "json"],
    outputFile: { json: ".vitest-results.json" }
  }
})
