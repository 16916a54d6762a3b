// The seed's React hook: read a radiograph through the hai-tools server, with loading, error, result and cancel.
// A new read cancels the one in flight; unmounting cancels too; a cancelled read never overwrites state.
import { useCallback, useEffect, useRef, useState } from "react";

import type { HaiClient } from "./client.js";
import type { HaiError, RadiographRequest, RadiographResult } from "./types.js";

export interface RadiologyState {
  loading: boolean;
  error: HaiError | null;
  result: RadiographResult | null;
}

export interface UseMedGemmaRadiology extends RadiologyState {
  /** start a read (cancelling any in flight); resolves to the result, or null on error or cancel */
  read: (request: RadiographRequest) => Promise<RadiographResult | null>;
  /** cancel the read in flight, if any */
  cancel: () => void;
}

const IDLE: RadiologyState = { loading: false, error: null, result: null };

export function useMedGemmaRadiology(client: HaiClient): UseMedGemmaRadiology {
  const [state, setState] = useState<RadiologyState>(IDLE);
  const inFlight = useRef<AbortController | null>(null);

  const cancel = useCallback(() => {
    const controller = inFlight.current;
    if (controller === null) return;
    inFlight.current = null;
    controller.abort();
    setState((previous) => ({ ...previous, loading: false }));
  }, []);

  const read = useCallback(
    async (request: RadiographRequest): Promise<RadiographResult | null> => {
      inFlight.current?.abort();
      const controller = new AbortController();
      inFlight.current = controller;
      setState({ loading: true, error: null, result: null });
      const outcome = await client.readRadiograph(request, { signal: controller.signal });
      if (controller.signal.aborted || inFlight.current !== controller) return null;
      inFlight.current = null;
      if (outcome.ok) {
        setState({ loading: false, error: null, result: outcome.value });
        return outcome.value;
      }
      setState({ loading: false, error: outcome.error, result: null });
      return null;
    },
    [client],
  );

  useEffect(() => () => inFlight.current?.abort(), []);

  return { ...state, read, cancel };
}
