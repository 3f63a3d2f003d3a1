import { Container } from "@cloudflare/containers";

export class RoutedContainer extends Container {
  defaultPort = 8080;
  sleepAfter = "2m";
  envVars = {
    MESSAGE: "routed by code",
  };

  override onStart() {
    console.log("RoutedContainer started");
  }
}
